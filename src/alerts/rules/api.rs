//! The alert rules API, for admins of an org (the admin role or scope, and the org from the
//! credentials' `org:<id>` scope, as telemetry takes it): rules CRUD
//! (`/api/v1/alerts/rules[/{name}]`), the org's active alerts (`/api/v1/alerts/active`) and
//! its transition history (`/api/v1/alerts/history`). A rule is validated whole before it is
//! stored; a refusal is a 400 naming the field, and stores nothing. Rules from the rules
//! file or the built-in rules cannot be changed here (409).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::history::{self, Filter};
use super::model::{Rule, Source};
use super::store::{self, Inserted, Stored};
use super::validate::{self, Invalid};
use crate::app::AppContext;
use crate::gateway::auth::Admin;
use crate::http::error::ApiError;
use crate::http::json::StrictJson;
use crate::telemetry::tenant::org_of;

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, replace_rule, delete_rule))
        .routes(routes!(active))
        .routes(routes!(history_list))
}

crate::doc_schema!(
    /// A stored rule: the rule's fields plus where it came from and when it was saved.
    StoredRule = {"type": "object", "required": ["alert", "expr", "source"], "properties": {
        "alert": {"type": "string"}, "expr": {"type": "string"}, "for": {"type": "string"},
        "keep_firing_for": {"type": "string"}, "labels": {"type": "object"},
        "annotations": {"type": "object"}, "severity": {"type": "string"},
        "targets": {"type": "array", "items": {"type": "string"}}, "public": {"type": "boolean"},
        "source": {"type": "string", "enum": ["api", "file", "builtin"]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}
);

crate::doc_schema!(
    /// The org's rules.
    RuleList = {"type": "object", "required": ["rules"], "properties": {
        "rules": {"type": "array", "items": {"type": "object"}}}}
);

crate::doc_schema!(
    /// The org's pending and firing alerts.
    ActiveAlerts = {"type": "object", "required": ["alerts"], "properties": {
        "alerts": {"type": "array", "items": {"type": "object", "required": ["rule", "state", "labels"]}}}}
);

crate::doc_schema!(
    /// A page of transitions, newest first, and the cursor of the next page (null at the end).
    AlertHistory = {"type": "object", "required": ["history", "next_cursor"], "properties": {
        "history": {"type": "array", "items": {"type": "object", "required": ["id", "rule", "from", "to", "at", "sequence"]}},
        "next_cursor": {"type": ["string", "null"]}}}
);

/// The admin's org.
fn org(admin: &Admin) -> Result<String, ApiError> {
    org_of(&admin.0)
}

fn invalid(e: Invalid) -> ApiError {
    ApiError::bad_request("invalid_rule")
        .with("field", e.field)
        .with("reason", e.reason)
}

fn stored_json(s: &Stored) -> Value {
    let mut v = serde_json::to_value(&s.rule).unwrap_or(Value::Null);
    v["source"] = json!(s.source.as_str());
    v["created_at"] = json!(crate::events::rfc3339_micros(s.created_at));
    v["updated_at"] = json!(crate::events::rfc3339_micros(s.updated_at));
    v
}

/// Reads a rule body (the same shape as a rules file's entry) and validates it whole,
/// including that every target it names exists for `org` (its own or a configured one): a
/// rule saved with a typo in a target would otherwise fire into a dead letter.
async fn read_rule(ctx: &AppContext, org: &str, body: Value) -> Result<Rule, ApiError> {
    let rule: Rule = serde_json::from_value(body).map_err(|e| {
        ApiError::bad_request("invalid_rule")
            .with("field", "$")
            .with("reason", e.to_string())
    })?;
    validate::check(ctx, &rule, &ctx.config.alerts.rules)
        .await
        .map_err(invalid)?;
    for t in &rule.targets {
        if !crate::alerts::notify::target_exists(ctx, org, t).await? {
            return Err(ApiError::bad_request("invalid_rule")
                .with("field", "targets")
                .with(
                    "reason",
                    format!("no target {t:?}: create it with POST /api/v1/alerts/targets or under alerts.notify.targets"),
                ));
        }
    }
    Ok(rule)
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("unknown_rule").with("rule", name.to_string())
}

/// A 409 for a rule that is not the API's to change.
fn not_ours(s: &Stored) -> ApiError {
    let why = match s.source {
        Source::File => "the rule comes from the rules file (alerts.rules.file); change it there",
        _ => "the rule is built in (alerts.rules.builtin); it cannot be changed",
    };
    ApiError::new(StatusCode::CONFLICT, "rule_read_only")
        .with("rule", s.rule.alert.clone())
        .with("reason", why)
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/rules",
    tag = "alerts",
    operation_id = "list_alert_rules",
    summary = "The org's alert rules",
    responses(
        (status = 200, description = "The rules", body = RuleList),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn list_rules(State(ctx): State<AppContext>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let org = org(&admin)?;
    let rules: Vec<Value> = store::list(&ctx.store, &org)
        .await?
        .iter()
        .map(stored_json)
        .collect();
    Ok(Json(json!({ "rules": rules })))
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/rules",
    tag = "alerts",
    operation_id = "create_alert_rule",
    summary = "Add an alert rule",
    request_body = Rule,
    responses(
        (status = 201, description = "Stored", body = StoredRule),
        (status = 400, description = "An invalid rule (`invalid_rule`, naming the field)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "The name is taken (`duplicate_rule`) or the org has alerts.rules.max_rules_per_org rules (`too_many_rules`)", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not parse", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn create_rule(
    State(ctx): State<AppContext>,
    admin: Admin,
    StrictJson(body): StrictJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let org = org(&admin)?;
    let rule = read_rule(&ctx, &org, body).await?;
    let max = ctx.config.alerts.rules.max_rules_per_org;
    match store::insert(&ctx.store, &org, &rule, max).await? {
        Inserted::Created => {}
        Inserted::Duplicate => {
            return Err(ApiError::new(StatusCode::CONFLICT, "duplicate_rule")
                .with("rule", rule.alert.clone()));
        }
        Inserted::Full(max) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "too_many_rules").with(
                "reason",
                format!("the org has {max} rules, the most allowed"),
            ));
        }
    }
    let stored = store::get(&ctx.store, &org, &rule.alert)
        .await?
        .ok_or_else(|| not_found(&rule.alert))?;
    Ok((StatusCode::CREATED, Json(stored_json(&stored))))
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/rules/{name}",
    tag = "alerts",
    operation_id = "get_alert_rule",
    summary = "One alert rule",
    params(("name" = String, Path, description = "The rule's name")),
    responses(
        (status = 200, description = "The rule", body = StoredRule),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such rule in the org (`unknown_rule`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn get_rule(
    State(ctx): State<AppContext>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let org = org(&admin)?;
    let s = store::get(&ctx.store, &org, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(stored_json(&s)))
}

#[utoipa::path(
    put,
    path = "/api/v1/alerts/rules/{name}",
    tag = "alerts",
    operation_id = "replace_alert_rule",
    summary = "Replace an alert rule",
    params(("name" = String, Path, description = "The rule's name")),
    request_body = Rule,
    responses(
        (status = 200, description = "Stored", body = StoredRule),
        (status = 400, description = "An invalid rule, or `alert` differs from the path (`invalid_rule`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such rule in the org (`unknown_rule`)", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "The rule comes from the rules file or is built in (`rule_read_only`)", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not parse", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn replace_rule(
    State(ctx): State<AppContext>,
    admin: Admin,
    Path(name): Path<String>,
    StrictJson(body): StrictJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let org = org(&admin)?;
    let rule = read_rule(&ctx, &org, body).await?;
    if rule.alert != name {
        return Err(ApiError::bad_request("invalid_rule")
            .with("field", "alert")
            .with("reason", "the body's alert must be the name in the path"));
    }
    let existing = store::get(&ctx.store, &org, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    if existing.source != Source::Api {
        return Err(not_ours(&existing));
    }
    if !store::update(&ctx.store, &org, &rule).await? {
        return Err(not_found(&name));
    }
    let s = store::get(&ctx.store, &org, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(stored_json(&s)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/alerts/rules/{name}",
    tag = "alerts",
    operation_id = "delete_alert_rule",
    summary = "Delete an alert rule (its active alerts resolve at the next evaluation)",
    params(("name" = String, Path, description = "The rule's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such rule in the org (`unknown_rule`)", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "The rule comes from the rules file or is built in (`rule_read_only`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn delete_rule(
    State(ctx): State<AppContext>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let org = org(&admin)?;
    let existing = store::get(&ctx.store, &org, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    if existing.source != Source::Api {
        return Err(not_ours(&existing));
    }
    if !store::delete(&ctx.store, &org, &name).await? {
        return Err(not_found(&name));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/active",
    tag = "alerts",
    operation_id = "active_alerts",
    summary = "The org's pending and firing alerts",
    responses(
        (status = 200, description = "The alerts, oldest first", body = ActiveAlerts),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn active(State(ctx): State<AppContext>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let org = org(&admin)?;
    let alerts = super::state::active(&ctx.store, Some(org.as_str())).await?;
    Ok(Json(json!({ "alerts": alerts })))
}

/// History filters: `from`/`to` as RFC 3339 or unix seconds, as Prometheus takes them.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this rule's transitions.
    pub rule: Option<String>,
    /// RFC 3339 or unix seconds (inclusive).
    pub from: Option<String>,
    /// RFC 3339 or unix seconds (inclusive).
    pub to: Option<String>,
    /// 1-1000 (default 100).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn bad_param(name: &str, reason: &str) -> ApiError {
    ApiError::bad_request("invalid_parameter")
        .with("parameter", name.to_string())
        .with("reason", reason.to_string())
}

fn time(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        crate::telemetry::query::parse_time_ms(s)
            .ok_or_else(|| bad_param(name, "not an RFC 3339 time or unix seconds"))
    })
    .transpose()
}

impl HistoryQuery {
    fn filter(&self, org: String) -> Result<Filter, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(bad_param("limit", "must be 1-1000"));
        }
        let before = self
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| bad_param("cursor", "not a cursor"))
            })
            .transpose()?;
        Ok(Filter {
            org,
            rule: self.rule.clone(),
            from: time("from", self.from.as_deref())?,
            to: time("to", self.to.as_deref())?,
            before,
            limit,
        })
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/history",
    tag = "alerts",
    operation_id = "alert_history",
    summary = "The org's alert transitions, newest first",
    params(HistoryQuery),
    responses(
        (status = 200, description = "A page of transitions", body = AlertHistory),
        (status = 400, description = "An unreadable time, limit or cursor (`invalid_parameter`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin, or no org:<id> scope", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn history_list(
    State(ctx): State<AppContext>,
    admin: Admin,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.filter(org(&admin)?)?;
    let page = history::list(&ctx.store, &f).await?;
    let next = (page.len() as i64 == f.limit)
        .then(|| page.last().map(|e| e.row.to_string()))
        .flatten();
    Ok(Json(json!({ "history": page, "next_cursor": next })))
}
