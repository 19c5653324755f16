//! Operator endpoints of the gateway (admin role or scope): API-key management and the
//! state of the route table; plus `whoami` for any caller, and record pruning.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Admin, Principal};
use crate::app::AppContext;
use crate::http::error::ApiError;
use crate::http::json::StrictJson;
use crate::on_write;
use crate::store::{StoreError, now_micros};

#[derive(Deserialize)]
pub struct CreateKey {
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

pub async fn create_key(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    StrictJson(req): StrictJson<CreateKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // The name becomes the principal id `apikey:<name>` in stored events: no control
    // characters (PostgreSQL TEXT cannot even hold NUL).
    if req.name.is_empty() || req.name.len() > 100 || req.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_name")
            .with("reason", "1 to 100 characters, no control characters"));
    }
    // Scopes are stored space-separated.
    if let Some(bad) = req.scopes.iter().find(|s| {
        s.is_empty() || s.len() > 100 || s.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        return Err(ApiError::bad_request("invalid_scope")
            .with("scope", bad.clone())
            .with(
                "reason",
                "1 to 100 characters, no spaces or control characters",
            ));
    }
    match ctx.auth.api_keys.create(&req.name, &req.scopes).await {
        Ok((key, rec)) => Ok((
            StatusCode::CREATED,
            Json(json!({ "key": key, "id": rec.id, "name": rec.name, "scopes": rec.scopes })),
        )),
        Err(e) if e.is_unique_violation() => {
            Err(ApiError::new(StatusCode::CONFLICT, "name_taken").with("name", req.name))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn list_keys(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
) -> Result<Json<Value>, ApiError> {
    let keys = ctx.auth.api_keys.list().await?;
    Ok(Json(json!({ "keys": keys })))
}

pub async fn revoke_key(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if ctx.auth.api_keys.revoke(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("unknown_key").with("name", name))
    }
}

pub async fn routes(State(ctx): State<AppContext>, Admin(_): Admin) -> Json<Value> {
    let t = ctx.routes.current();
    let routes: serde_json::Map<String, Value> = t
        .routes
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                json!({ "topic": r.topic, "allow": r.allow, "scopes": r.scopes }),
            )
        })
        .collect();
    let hooks: serde_json::Map<String, Value> = t
        .webhooks
        .iter()
        .map(|(k, w)| (k.clone(), json!({ "topic": w.topic })))
        .collect();
    Json(json!({ "routes": routes, "webhooks": hooks, "last_error": ctx.routes.last_error() }))
}

pub async fn whoami(p: Principal) -> Json<Value> {
    Json(
        json!({ "id": p.id, "kind": p.kind.as_str(), "roles": p.roles, "scopes": p.scopes, "admin": p.admin }),
    )
}

/// Deletes idempotency records past their TTL and webhook ids past twice the tolerance.
pub async fn prune_records(ctx: &AppContext) -> Result<(), StoreError> {
    let now = now_micros();
    let idem_cut = now - (ctx.config.gateway.idempotency_ttl_hours as i64) * 3_600_000_000;
    let hook_cut = now - (ctx.config.gateway.webhook_tolerance_secs as i64) * 2_000_000;
    on_write!(ctx.store, p => {
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(idem_cut).execute(p).await?;
        sqlx::query("DELETE FROM webhook_messages WHERE received_at < $1").bind(hook_cut).execute(p).await?;
    });
    Ok(())
}
