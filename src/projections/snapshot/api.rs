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

crate::doc_schema!(
    /// A snapshot: its group, when, the group's positions and how many rows.
    Snapshot = {"type": "object", "required": ["id", "group", "created_at", "positions", "row_count"], "properties": {
        "id": {"type": "integer"}, "group": {"type": "string"},
        "created_at": {"type": "integer", "description": "Unix microseconds"},
        "positions": {"type": "array", "items": {"type": "object", "required": ["topic", "partition", "next_offset"], "properties": {
            "topic": {"type": "string"}, "partition": {"type": "integer"}, "next_offset": {"type": "integer"}}}},
        "row_count": {"type": "integer"}}}
);

crate::doc_schema!(
    /// The snapshots, newest first.
    SnapshotList = {"type": "object", "required": ["snapshots"], "properties": {
        "snapshots": {"type": "array", "items": {"type": "object", "required": ["id", "group", "created_at", "row_count"]}}}}
);

crate::doc_schema!(
    /// A restore request.
    RestoreRequested = {"type": "object", "required": ["snapshot", "group", "request_id"], "properties": {
        "snapshot": {"type": "integer"}, "group": {"type": "string"}, "request_id": {"type": "integer"}}}
);

crate::doc_schema!(
    /// Where a restore request stands.
    RestoreStatus = {"type": "object", "required": ["request_id", "group", "snapshot", "applied", "applied_at"], "properties": {
        "request_id": {"type": "integer"}, "group": {"type": "string"}, "snapshot": {"type": "integer"},
        "applied": {"type": "boolean"}, "applied_at": {"type": ["string", "null"]}}}
);

/// The consumer group whose read model to snapshot.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TakeBody {
    pub group: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this group's snapshots.
    pub group: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/snapshots",
    tag = "admin",
    operation_id = "take_snapshot",
    summary = "Snapshot a group's read model",
    request_body = TakeBody,
    responses(
        (status = 201, description = "Taken", body = Snapshot),
        (status = 400, description = "The group has no snapshottable read model (`not_snapshottable`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such group (`unknown_group`)", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not fit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/admin/snapshots",
    tag = "admin",
    operation_id = "list_snapshots",
    summary = "The snapshots",
    params(ListQuery),
    responses(
        (status = 200, description = "The snapshots", body = SnapshotList),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn list(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let items = super::list(&ctx.store, q.group.as_deref()).await?;
    Ok(Json(json!({ "snapshots": items })))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/snapshots/{id}/restore",
    tag = "admin",
    operation_id = "restore_snapshot",
    summary = "Restore a snapshot (applied by the running consumer)",
    params(("id" = i64, Path, description = "The snapshot id")),
    responses(
        (status = 202, description = "Requested", body = RestoreRequested),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such snapshot (`unknown_snapshot`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/admin/snapshots/restores/{request}",
    tag = "admin",
    operation_id = "restore_status",
    summary = "Whether a restore was applied",
    params(("request" = i64, Path, description = "The request id")),
    responses(
        (status = 200, description = "The request", body = RestoreStatus),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such request (`unknown_request`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(list, take))
        .routes(routes!(restore))
        .routes(routes!(restore_status))
}
