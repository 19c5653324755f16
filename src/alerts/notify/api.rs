//! The notification admin API, per org (the caller's `org:<id>` scope) and for admins only:
//! targets (`/api/v1/alerts/targets…`: the secret is answered once, on create, never on
//! reads) and deliveries (`/api/v1/alerts/deliveries`, with a redrive for dead ones).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::deliveries::{self, RedriveError};
use super::targets::{self, TargetError, TargetSpec};
use crate::app::AppContext;
use crate::gateway::auth::Admin;
use crate::http::error::ApiError;
use crate::http::json::StrictJson;
use crate::telemetry::tenant::org_of;

impl From<TargetError> for ApiError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Invalid { field, reason } => ApiError::bad_request("invalid_target")
                .with("field", field)
                .with("reason", reason),
            TargetError::Exists(name) => {
                ApiError::new(StatusCode::CONFLICT, "target_exists").with("name", name)
            }
            TargetError::NotFound(name) => ApiError::not_found("unknown_target").with("name", name),
            TargetError::Store(s) => s.into(),
        }
    }
}

impl From<RedriveError> for ApiError {
    fn from(e: RedriveError) -> Self {
        match e {
            RedriveError::NotFound(id) => ApiError::not_found("unknown_delivery").with("id", id),
            RedriveError::NotDead(id) => {
                ApiError::new(StatusCode::CONFLICT, "not_dead").with("id", id)
            }
            RedriveError::Store(s) => s.into(),
        }
    }
}

crate::doc_schema!(
    /// A webhook target (never its secret).
    TargetDoc = {"type": "object", "required": ["name", "url", "rate_per_minute", "burst", "timeout_ms", "headers", "source"], "properties": {
        "name": {"type": "string"}, "url": {"type": "string"},
        "rate_per_minute": {"type": "number"}, "burst": {"type": "integer"}, "timeout_ms": {"type": "integer"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "source": {"type": "string", "enum": ["api", "config"]}}}
);

crate::doc_schema!(
    /// A target just created, with its secret (the only time it is answered).
    CreatedTargetDoc = {"type": "object", "required": ["name", "url", "secret"], "properties": {
        "name": {"type": "string"}, "url": {"type": "string"}, "secret": {"type": "string"},
        "rate_per_minute": {"type": "number"}, "burst": {"type": "integer"}, "timeout_ms": {"type": "integer"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "source": {"type": "string"}}}
);

crate::doc_schema!(
    /// The org's targets, then the configured ones it does not shadow.
    TargetsDoc = {"type": "object", "required": ["targets"], "properties": {
        "targets": {"type": "array", "items": {"type": "object", "required": ["name", "url", "source"]}}}}
);

crate::doc_schema!(
    /// Deliveries, newest first.
    DeliveriesDoc = {"type": "object", "required": ["deliveries"], "properties": {
        "deliveries": {"type": "array", "items": {"type": "object", "required": ["id", "transition_id", "rule", "target", "state"]}}}}
);

crate::doc_schema!(
    /// The delivery ids made pending again.
    RedrivenDoc = {"type": "object", "required": ["redriven"], "properties": {
        "redriven": {"type": "array", "items": {"type": "integer"}}}}
);

fn admin_org(p: &Admin) -> Result<String, ApiError> {
    org_of(&p.0)
}

/// A name no target can have is not looked up (nor handed to the store, which may refuse its
/// bytes): there is no such target.
fn known_name(name: &str) -> Result<(), ApiError> {
    if targets::valid_name(name) {
        Ok(())
    } else {
        Err(TargetError::NotFound(name.to_string()).into())
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/targets",
    tag = "alerts",
    operation_id = "list_alert_targets",
    summary = "Webhook targets of the org (secrets never shown)",
    responses(
        (status = 200, description = "The targets", body = TargetsDoc),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_targets(
    State(ctx): State<AppContext>,
    admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let org = admin_org(&admin)?;
    let own = targets::list(&ctx.store, &org).await?;
    let mut out: Vec<Value> = own.iter().map(targets::Target::public_json).collect();
    // Configured targets are shared by every org; an org's own one of the same name wins.
    if let Ok(configured) = targets::from_config(&ctx.config.alerts.notify) {
        for (name, t) in configured {
            if !own.iter().any(|o| o.name == name) {
                out.push(t.public_json());
            }
        }
    }
    Ok(Json(json!({ "targets": out })))
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/targets",
    tag = "alerts",
    operation_id = "create_alert_target",
    summary = "Create a webhook target; answers its secret (generated when not given), once",
    request_body = TargetSpec,
    responses(
        (status = 201, description = "Created", body = CreatedTargetDoc),
        (status = 400, description = "A field is not acceptable (`invalid_target`, naming the field)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "The name is taken (`target_exists`)", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not fit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create_target(
    State(ctx): State<AppContext>,
    admin: Admin,
    StrictJson(spec): StrictJson<TargetSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let org = admin_org(&admin)?;
    let name = spec.name.clone().ok_or_else(|| {
        ApiError::from(TargetError::Invalid {
            field: "name",
            reason: "required".into(),
        })
    })?;
    let t = targets::build(&ctx.config.alerts.notify, &name, &spec, None, "api")?;
    targets::insert(&ctx.store, &org, &t).await?;
    let mut body = t.public_json();
    body["secret"] = Value::String(t.secret.clone());
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/targets/{name}",
    tag = "alerts",
    operation_id = "show_alert_target",
    summary = "One webhook target (never its secret)",
    params(("name" = String, Path, description = "The target's name")),
    responses(
        (status = 200, description = "The target", body = TargetDoc),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such target (`unknown_target`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn show_target(
    State(ctx): State<AppContext>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let org = admin_org(&admin)?;
    known_name(&name)?;
    let t = targets::resolve(&ctx, &org, &name)
        .await?
        .ok_or(TargetError::NotFound(name))?;
    Ok(Json(t.public_json()))
}

#[utoipa::path(
    put,
    path = "/api/v1/alerts/targets/{name}",
    tag = "alerts",
    operation_id = "update_alert_target",
    summary = "Replace an org's webhook target (the secret is kept unless one is given)",
    params(("name" = String, Path, description = "The target's name")),
    request_body = TargetSpec,
    responses(
        (status = 200, description = "The target", body = TargetDoc),
        (status = 400, description = "A field is not acceptable (`invalid_target`, naming the field)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "The org has no such target (`unknown_target`)", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not fit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn update_target(
    State(ctx): State<AppContext>,
    admin: Admin,
    Path(name): Path<String>,
    StrictJson(spec): StrictJson<TargetSpec>,
) -> Result<Json<Value>, ApiError> {
    let org = admin_org(&admin)?;
    known_name(&name)?;
    if spec.name.as_deref().is_some_and(|n| n != name) {
        return Err(TargetError::Invalid {
            field: "name",
            reason: "differs from the path (targets cannot be renamed)".into(),
        }
        .into());
    }
    let old = targets::get(&ctx.store, &org, &name)
        .await?
        .ok_or_else(|| TargetError::NotFound(name.clone()))?;
    let t = targets::build(
        &ctx.config.alerts.notify,
        &name,
        &spec,
        Some(old.secret),
        "api",
    )?;
    targets::update(&ctx.store, &org, &t).await?;
    Ok(Json(t.public_json()))
}

#[utoipa::path(
    delete,
    path = "/api/v1/alerts/targets/{name}",
    tag = "alerts",
    operation_id = "delete_alert_target",
    summary = "Delete an org's webhook target (what is still pending for it is dead-lettered)",
    params(("name" = String, Path, description = "The target's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "The org has no such target (`unknown_target`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn delete_target(
    State(ctx): State<AppContext>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let org = admin_org(&admin)?;
    known_name(&name)?;
    if !targets::delete(&ctx.store, &org, &name).await? {
        return Err(TargetError::NotFound(name).into());
    }
    super::wake();
    Ok(StatusCode::NO_CONTENT)
}

/// Which deliveries.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// pending, delivered or dead.
    pub state: Option<String>,
    /// One target's.
    pub target: Option<String>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/deliveries",
    tag = "alerts",
    operation_id = "list_alert_deliveries",
    summary = "Deliveries of alert transitions to targets, newest first",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "Deliveries", body = DeliveriesDoc),
        (status = 400, description = "An unknown state, a target name no target can have, or a limit out of range (`invalid_request`, naming the field)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_deliveries(
    State(ctx): State<AppContext>,
    admin: Admin,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let org = admin_org(&admin)?;
    if let Some(s) = &q.state
        && !deliveries::STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request("invalid_request")
            .with("field", "state")
            .with("reason", "one of pending, delivered, dead"));
    }
    if let Some(t) = &q.target
        && !targets::valid_name(t)
    {
        return Err(ApiError::bad_request("invalid_request")
            .with("field", "target")
            .with("reason", "1-64 of A-Z a-z 0-9 _ . -"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_request")
            .with("field", "limit")
            .with("reason", "1-1000"));
    }
    let f = deliveries::Filter {
        state: q.state,
        target: q.target,
        limit,
    };
    let items = deliveries::list(&ctx.store, &org, &f).await?;
    Ok(Json(json!({ "deliveries": items })))
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/deliveries/{id}/redrive",
    tag = "alerts",
    operation_id = "redrive_alert_delivery",
    summary = "Send a dead delivery again (its notification: same body and webhook-id, attempts from zero)",
    params(("id" = i64, Path, description = "The delivery id")),
    responses(
        (status = 200, description = "The delivery ids made pending", body = RedrivenDoc),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "The org has no such delivery (`unknown_delivery`)", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "The delivery is not dead (`not_dead`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn redrive_delivery(
    State(ctx): State<AppContext>,
    admin: Admin,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let org = admin_org(&admin)?;
    let ids = deliveries::redrive(&ctx.store, &org, id).await?;
    super::wake();
    Ok(Json(json!({ "redriven": ids })))
}

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(list_targets, create_target))
        .routes(routes!(show_target, update_target, delete_target))
        .routes(routes!(list_deliveries))
        .routes(routes!(redrive_delivery))
}
