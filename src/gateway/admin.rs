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

/// A new API key: its name (1 to 100 characters, no control characters) and scopes.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateKey {
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

crate::doc_schema!(
    /// A created key: the secret is shown this once.
    CreatedKey = {"type": "object", "required": ["key", "id", "name", "scopes"], "properties": {
        "key": {"type": "string", "description": "The secret, for the X-API-Key header"},
        "id": {"type": "string"}, "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}}}}
);

crate::doc_schema!(
    /// The API keys, never their secrets.
    KeyList = {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {
        "type": "object", "required": ["id", "name", "scopes", "created_at"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "integer", "description": "Unix microseconds"},
            "revoked_at": {"type": ["integer", "null"]}}}}}}
);

crate::doc_schema!(
    /// The route table: routes and webhooks by name, and the last reload error.
    RouteList = {"type": "object", "required": ["routes", "webhooks"], "properties": {
        "routes": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "topic": {"type": "string"}, "allow": {"type": "array", "items": {"type": "string"}},
            "scopes": {"type": "array", "items": {"type": "string"}}}}},
        "webhooks": {"type": "object"}}}
);

crate::doc_schema!(
    /// The authenticated principal.
    WhoAmI = {"type": "object", "required": ["id", "kind", "roles", "scopes", "admin"], "properties": {
        "id": {"type": "string"}, "kind": {"type": "string", "enum": ["user", "service"]},
        "roles": {"type": "array", "items": {"type": "string"}},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "admin": {"type": "boolean"}}}
);

#[utoipa::path(
    post,
    path = "/api/v1/admin/apikeys",
    tag = "admin",
    operation_id = "create_api_key",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; the secret is in the answer only", body = CreatedKey),
        (status = 400, description = "An invalid name or scope (`invalid_name`, `invalid_scope`), or malformed JSON", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "The name is taken (`name_taken`)", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not fit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/admin/apikeys",
    tag = "admin",
    operation_id = "list_api_keys",
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_keys(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
) -> Result<Json<Value>, ApiError> {
    let keys = ctx.auth.api_keys.list().await?;
    Ok(Json(json!({ "keys": keys })))
}

#[utoipa::path(
    delete,
    path = "/api/v1/admin/apikeys/{name}",
    tag = "admin",
    operation_id = "revoke_api_key",
    params(("name" = String, Path, description = "The key's name")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such key (`unknown_key`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/admin/routes",
    tag = "admin",
    operation_id = "list_routes",
    responses(
        (status = 200, description = "The live route table", body = RouteList),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "admin",
    operation_id = "whoami",
    responses((status = 200, description = "Who the credentials belong to", body = WhoAmI)),
    security(("bearer" = []), ("api_key" = []))
)]
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
