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

pub async fn me(State(ctx): State<AppContext>, p: Principal) -> Result<Json<Value>, ApiError> {
    Ok(Json(body(
        super::get(&ctx.store, &p.id, ctx.config.media.starting_credits).await?,
    )))
}

pub async fn of_user(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(body(
        super::get(&ctx.store, &user, ctx.config.media.starting_credits).await?,
    )))
}

pub fn router() -> axum::Router<AppContext> {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/users/me/stats", get(me))
        .route("/api/v1/users/{user}/stats", get(of_user))
}
