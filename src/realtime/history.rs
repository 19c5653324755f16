//! `GET /api/v1/notifications?after=<cursor>&limit=<n>`: the caller's history, **oldest first**,
//! by the same cursor the streams use (`<epoch>:<id>`; pass the last cursor you hold as `after`;
//! `next_after` is the cursor for the next page and for a stream's `Last-Event-ID`). Only rows
//! the caller may see are returned — their own, broadcasts, and direct messages to them — each
//! in the form the caller may see. A cursor of an epoch that is over gets 409 `cursor_reset`
//! with the cursor to start again from.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cursor::{self, Cursor};
use crate::app::AppContext;
use crate::gateway::auth::Principal;
use crate::http::error::ApiError;
use crate::projections::notifications::epoch::{self, Page};
use crate::projections::notifications::{NotificationRow, Viewer};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    pub after: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HistoryPage<'a> {
    pub notifications: Vec<std::borrow::Cow<'a, NotificationRow>>,
    /// The cursor to continue from (the last row returned, or `after` when none).
    pub next_after: String,
    /// The read model's epoch these rows belong to.
    pub epoch: i64,
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

/// 409 for a cursor whose epoch is over.
fn reset(now: i64) -> ApiError {
    let mut e = ApiError::new(StatusCode::CONFLICT, "cursor_reset");
    if let Value::Object(body) = cursor::reset_body(Cursor::start(now)) {
        for (k, v) in body {
            e = e.with(&k, v);
        }
    }
    e
}

crate::doc_schema!(
    /// A page of notifications, oldest first.
    NotificationPage = {"type": "object", "required": ["notifications", "next_after", "epoch", "has_more"], "properties": {
        "notifications": {"type": "array", "items": {"type": "object",
            "required": ["id", "event_id", "user_id", "event_type", "payload", "visibility", "event_time"],
            "properties": {
                "id": {"type": "integer"}, "event_id": {"type": "string"},
                "user_id": {"type": "string", "description": "The author"},
                "event_type": {"type": "string"}, "payload": {"type": "object"},
                "visibility": {"type": "string"}, "recipient_id": {"type": ["string", "null"]},
                "event_time": {"type": "integer", "description": "Unix microseconds"}}}},
        "next_after": {"type": "string", "description": "The cursor to continue from"},
        "epoch": {"type": "integer", "description": "The read model's epoch these rows belong to"},
        "has_more": {"type": "boolean"}}}
);

#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "notifications",
    operation_id = "list_notifications",
    summary = "The caller's notifications after a cursor",
    params(("after" = Option<String>, Query, description = "A cursor (next_after of the previous page)"), ("limit" = Option<String>, Query, description = "1 to the configured maximum")),
    responses(
        (status = 200, description = "A page", body = NotificationPage),
        (status = 400, description = "An invalid cursor or limit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(ctx): State<AppContext>,
    p: Principal,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let after = cursor::optional_param("after", q.after.as_deref())?;
    let limit = parse_limit(q.limit.as_deref())?;
    let from = after.map_or(0, |c| c.id);
    // One extra row tells whether there is more.
    let Page { epoch, mut rows } = epoch::visible_page(&ctx.store, &p.id, from, limit + 1).await?;
    // Rows of another epoch than the cursor's would silently shift the client.
    if after.is_some_and(|c| !c.is_start() && c.epoch != epoch) {
        return Err(reset(epoch));
    }
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let viewer = Viewer::new(p.id.as_str(), p.admin);
    let page = HistoryPage {
        next_after: Cursor::new(epoch, rows.last().map_or(from, |r| r.id)).to_string(),
        notifications: rows.iter().map(|r| r.view_for(&viewer)).collect(),
        epoch,
        has_more,
    };
    Ok(Json(serde_json::to_value(page).unwrap_or(Value::Null)))
}
