//! Operator endpoints for snapshots (admin role or scope):
//! `POST /api/v1/admin/snapshots {"group": …}` takes one, `GET /api/v1/admin/snapshots?group=`
//! lists them, `POST /api/v1/admin/snapshots/{id}/restore` asks the group's consumer to rebuild
//! from it (202 with the replay request id; `GET /api/v1/admin/snapshots/restores/{request}`
//! says when it was applied).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::SnapshotError;
use crate::app::AppContext;
use crate::consumers::seeks;
use crate::gateway::auth::Admin;
use crate::http::error::ApiError;
use crate::http::json::StrictJson;

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::UnknownGroup(g) => ApiError::not_found("unknown_group").with("group", g),
            SnapshotError::NotSnapshottable(g) => {
                ApiError::bad_request("not_snapshottable").with("group", g)
            }
            SnapshotError::NotFound(id) => ApiError::not_found("unknown_snapshot").with("id", id),
            SnapshotError::Store(s) => s.into(),
            other => ApiError::internal(other),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TakeBody {
    pub group: String,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub group: Option<String>,
}

async fn take(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    StrictJson(b): StrictJson<TakeBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let info = super::take(&ctx, &b.group).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(info).unwrap_or(Value::Null)),
    ))
}

async fn list(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let items = super::list(&ctx.store, q.group.as_deref()).await?;
    Ok(Json(json!({ "snapshots": items })))
}

async fn restore(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (group, request_id) = super::request_restore(&ctx, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "snapshot": id, "group": group, "request_id": request_id })),
    ))
}

async fn restore_status(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Path(request): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let r = seeks::get(&ctx.store, request)
        .await?
        .filter(|r| r.mode == super::SEEK_MODE)
        .ok_or_else(|| ApiError::not_found("unknown_request").with("request_id", request))?;
    Ok(Json(json!({
        "request_id": r.id,
        "group": r.group_name,
        "snapshot": r.position,
        "applied": r.applied_at.is_some(),
        "applied_at": r.applied_at.map(crate::events::rfc3339_micros),
    })))
}

pub fn router() -> axum::Router<AppContext> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/admin/snapshots", get(list).post(take))
        .route("/api/v1/admin/snapshots/{id}/restore", post(restore))
        .route(
            "/api/v1/admin/snapshots/restores/{request}",
            get(restore_status),
        )
}
