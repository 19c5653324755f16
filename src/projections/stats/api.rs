//! `GET /api/v1/users/me/stats` (the caller's stats) and `GET /api/v1/users/{user}/stats`
//! (anyone's, for operators). Times are given both as unix microseconds and RFC 3339.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::UserStats;
use crate::app::AppContext;
use crate::events::rfc3339_micros;
use crate::gateway::auth::{Admin, Principal};
use crate::http::error::ApiError;

fn body(s: UserStats) -> Value {
    let time = |t: Option<i64>| t.map(rfc3339_micros);
    json!({
        "user_id": s.user_id,
        "counts": s.counts,
        "first_login": time(s.first_login_at),
        "last_login": time(s.last_login_at),
        "messages_sent": s.messages_sent,
        "credits": s.credits,
        "first_event": time(s.first_event_at),
        "last_event": time(s.last_event_at),
        "first_login_at": s.first_login_at,
        "last_login_at": s.last_login_at,
    })
}

crate::doc_schema!(
    /// A user's statistics.
    UserStatsBody = {"type": "object", "required": ["user_id", "counts", "messages_sent", "credits"], "properties": {
        "user_id": {"type": "string"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "first_login": {"type": ["string", "null"]}, "last_login": {"type": ["string", "null"]},
        "messages_sent": {"type": "integer"}, "credits": {"type": "integer"},
        "first_event": {"type": ["string", "null"]}, "last_event": {"type": ["string", "null"]},
        "first_login_at": {"type": ["integer", "null"]}, "last_login_at": {"type": ["integer", "null"]}}}
);

#[utoipa::path(
    get,
    path = "/api/v1/users/me/stats",
    tag = "stats",
    operation_id = "my_stats",
    summary = "The caller's statistics",
    responses(
        (status = 200, description = "Statistics", body = UserStatsBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn me(State(ctx): State<AppContext>, p: Principal) -> Result<Json<Value>, ApiError> {
    Ok(Json(body(
        super::get(&ctx.store, &p.id, ctx.config.media.starting_credits).await?,
    )))
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{user}/stats",
    tag = "stats",
    operation_id = "user_stats",
    summary = "A user's statistics",
    params(("user" = String, Path, description = "The user id")),
    responses(
        (status = 200, description = "Statistics", body = UserStatsBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn of_user(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(body(
        super::get(&ctx.store, &user, ctx.config.media.starting_credits).await?,
    )))
}

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(of_user))
}
