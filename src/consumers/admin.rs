//! Operator actions on consumer groups, shared by the CLI (`substrate dlq …`,
//! `substrate replay …`) and the admin HTTP API (`/api/v1/admin/dlq…`, `/api/v1/admin/replay`),
//! next to the relay's dead letters (`/api/v1/admin/relay/parked…`, `crate::relay::parked`).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{dlq, seeks};
use crate::app::AppContext;
use crate::gateway::auth::Admin;
use crate::http::error::ApiError;
use crate::http::json::StrictJson;
use crate::log::SeekTo;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("no consumer group reads topic {0}")]
    NoGroup(String),
    #[error("consumer group {group} does not read topic {topic}")]
    GroupNotReading { group: String, topic: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(r) => ApiError::bad_request("invalid_request").with("reason", r),
            AdminError::NoGroup(t) => ApiError::not_found("unknown_group").with("topic", t),
            AdminError::GroupNotReading { group, topic } => ApiError::not_found("unknown_group")
                .with("group", group)
                .with("topic", topic),
            AdminError::Store(s) => s.into(),
        }
    }
}

/// Parses an RFC 3339 time into unix micros.
pub fn parse_time(s: &str) -> Result<i64, AdminError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| AdminError::Invalid(format!("{s} is not an RFC 3339 time: {e}")))
}

/// Records replay requests for `group` (or every group reading `topic`); returns their ids.
pub async fn request_replay(
    ctx: &AppContext,
    topic: &str,
    group: Option<&str>,
    to: SeekTo,
    rebuild: bool,
) -> Result<Vec<(String, i64)>, AdminError> {
    if rebuild && matches!(to, SeekTo::Offset(_)) {
        return Err(AdminError::Invalid(
            "a rebuild restarts every topic of the group: use --from-beginning or --from-time"
                .into(),
        ));
    }
    let groups: Vec<String> = match group {
        // Only a group that reads the topic can apply the request; any other would leave it
        // waiting for ever.
        Some(g) if !crate::consumers::registry::reads(ctx, g, topic) => {
            return Err(AdminError::GroupNotReading {
                group: g.to_string(),
                topic: topic.to_string(),
            });
        }
        Some(g) => vec![g.to_string()],
        None => crate::consumers::registry::all_groups(ctx)
            .into_iter()
            .filter(|(_, topics)| topics.iter().any(|t| t == topic))
            .map(|(g, _)| g)
            .collect(),
    };
    if groups.is_empty() {
        return Err(AdminError::NoGroup(topic.to_string()));
    }
    let mut out = Vec::new();
    for g in groups {
        let id = seeks::request(&ctx.store, &g, topic, to, rebuild).await?;
        out.push((g, id));
    }
    Ok(out)
}

/// Waits until the requests are applied (or `timeout`); returns whether all were.
pub async fn wait_applied(
    ctx: &AppContext,
    ids: &[i64],
    timeout: Duration,
) -> Result<bool, AdminError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut all = true;
        for id in ids {
            if seeks::get(&ctx.store, *id)
                .await?
                .and_then(|r| r.applied_at)
                .is_none()
            {
                all = false;
            }
        }
        if all {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

crate::doc_schema!(
    /// Replay requests, one per group.
    ReplayRequested = {"type": "object", "required": ["requests"], "properties": {
        "requests": {"type": "array", "items": {"type": "object", "required": ["group", "request_id"], "properties": {
            "group": {"type": "string"}, "request_id": {"type": "integer"}}}}}}
);

crate::doc_schema!(
    /// The ids of the dead letters (or parked rows) redriven.
    Redriven = {"type": "object", "required": ["redriven"], "properties": {
        "redriven": {"type": "array", "items": {"type": "integer"}}}}
);

crate::doc_schema!(
    /// The ids of the parked rows discarded.
    Discarded = {"type": "object", "required": ["discarded"], "properties": {
        "discarded": {"type": "array", "items": {"type": "integer"}}}}
);

crate::doc_schema!(
    /// Dead letters.
    DeadLetters = {"type": "object", "required": ["dead_letters"], "properties": {
        "dead_letters": {"type": "array", "items": {"type": "object", "required": ["id", "group", "topic"]}}}}
);

crate::doc_schema!(
    /// Rows the relay parked.
    ParkedRows = {"type": "object", "required": ["parked"], "properties": {
        "parked": {"type": "array", "items": {"type": "object", "required": ["id"]}}}}
);

/// Which dead letters: by ids, group, topic, time of failure (RFC 3339).
#[derive(Debug, Deserialize, Default, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    pub group: Option<String>,
    pub topic: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    #[serde(default)]
    pub all: bool,
    pub limit: Option<i64>,
    #[serde(default)]
    pub ids: Vec<i64>,
}

impl DlqQuery {
    pub fn filter(&self) -> Result<dlq::Filter, AdminError> {
        Ok(dlq::Filter {
            ids: self.ids.clone(),
            group: self.group.clone(),
            topic: self.topic.clone(),
            since: self.since.as_deref().map(parse_time).transpose()?,
            until: self.until.as_deref().map(parse_time).transpose()?,
            include_redriven: self.all,
            limit: self.limit,
        })
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/dlq",
    tag = "admin",
    operation_id = "list_dead_letters",
    summary = "Dead letters",
    params(DlqQuery),
    responses(
        (status = 200, description = "Dead letters", body = DeadLetters),
        (status = 400, description = "An unreadable time or filter", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn http_dlq_list(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Query(q): Query<DlqQuery>,
) -> Result<Json<Value>, ApiError> {
    let items = dlq::list(&ctx.store, &q.filter()?).await?;
    Ok(Json(json!({ "dead_letters": items })))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/dlq/{id}",
    tag = "admin",
    operation_id = "show_dead_letter",
    summary = "One dead letter with its decoded payload",
    params(("id" = i64, Path, description = "The dead letter id")),
    responses(
        (status = 200, description = "The dead letter", body = Object),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such dead letter (`unknown_dead_letter`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn http_dlq_show(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let f = dlq::Filter {
        ids: vec![id],
        include_redriven: true,
        ..Default::default()
    };
    let item = dlq::list(&ctx.store, &f)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("unknown_dead_letter").with("id", id))?;
    let payload = ctx.schemas.decode_json(&item.payload).await.ok();
    let mut v = serde_json::to_value(&item).unwrap_or(Value::Null);
    v["payload"] = payload.unwrap_or(Value::Null);
    Ok(Json(v))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/dlq/redrive",
    tag = "admin",
    operation_id = "redrive_dead_letters",
    summary = "Republish dead letters for their group",
    request_body = DlqQuery,
    responses(
        (status = 200, description = "The ids redriven", body = Redriven),
        (status = 400, description = "No filter given, or an unreadable time (`invalid_request`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not fit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn http_dlq_redrive(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    StrictJson(q): StrictJson<DlqQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.ids.is_empty()
        && q.group.is_none()
        && q.topic.is_none()
        && q.since.is_none()
        && q.until.is_none()
    {
        return Err(ApiError::bad_request("invalid_request")
            .with("reason", "give ids, group, topic or a time range"));
    }
    let done = dlq::redrive(&ctx.store, &ctx.outbox, &q.filter()?).await?;
    Ok(Json(
        json!({ "redriven": done.iter().map(|d| d.id).collect::<Vec<_>>() }),
    ))
}

/// What to replay: a topic (and optionally one group) from exactly one starting point.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReplayBody {
    pub topic: String,
    pub group: Option<String>,
    #[serde(default)]
    pub from_beginning: bool,
    pub from_offset: Option<i64>,
    pub from_time: Option<String>,
    #[serde(default)]
    pub rebuild: bool,
}

/// The replay target named by exactly one of the three options.
pub fn target(
    beginning: bool,
    offset: Option<i64>,
    time: Option<&str>,
) -> Result<SeekTo, AdminError> {
    match (beginning, offset, time) {
        (true, None, None) => Ok(SeekTo::Beginning),
        (false, Some(n), None) => Ok(SeekTo::Offset(n)),
        (false, None, Some(t)) => Ok(SeekTo::Time(parse_time(t)?)),
        _ => Err(AdminError::Invalid(
            "give exactly one of from_beginning, from_offset, from_time".into(),
        )),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/replay",
    tag = "admin",
    operation_id = "replay",
    summary = "Rewind consumer groups on a topic",
    request_body = ReplayBody,
    responses(
        (status = 202, description = "Requested", body = ReplayRequested),
        (status = 400, description = "Not exactly one starting point, or an unreadable time (`invalid_request`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No group reads the topic, or the named group does not (`unknown_group`)", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not fit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn http_replay(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    StrictJson(b): StrictJson<ReplayBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let to = target(b.from_beginning, b.from_offset, b.from_time.as_deref())?;
    let reqs = request_replay(&ctx, &b.topic, b.group.as_deref(), to, b.rebuild).await?;
    let list: Vec<Value> = reqs
        .iter()
        .map(|(g, id)| json!({ "group": g, "request_id": id }))
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "requests": list }))))
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ParkedQuery {
    /// Include redriven and discarded rows.
    #[serde(default)]
    pub all: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/relay/parked",
    tag = "admin",
    operation_id = "list_parked",
    summary = "Rows the relay parked",
    params(ParkedQuery),
    responses(
        (status = 200, description = "Parked rows", body = ParkedRows),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn http_parked_list(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Query(q): Query<ParkedQuery>,
) -> Result<Json<Value>, ApiError> {
    let items = crate::relay::parked::list(&ctx.store, q.all).await?;
    Ok(Json(json!({ "parked": items })))
}

/// Which parked rows: `{"ids": [..]}`, or `{"all": true}` (redrive only).
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
pub struct ParkedBody {
    #[serde(default)]
    pub ids: Vec<i64>,
    #[serde(default)]
    pub all: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/relay/parked/redrive",
    tag = "admin",
    operation_id = "redrive_parked",
    summary = "Send parked rows again",
    request_body = ParkedBody,
    responses(
        (status = 200, description = "The ids sent again", body = Redriven),
        (status = 400, description = "Neither ids nor all, or both (`invalid_request`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not fit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn http_parked_redrive(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Json(b): Json<ParkedBody>,
) -> Result<Json<Value>, ApiError> {
    use crate::relay::parked::{Which, redrive};
    let which = match (b.all, b.ids.is_empty()) {
        (true, true) => Which::All,
        (false, false) => Which::Ids(b.ids),
        _ => {
            return Err(ApiError::bad_request("invalid_request")
                .with("reason", "give either ids or all: true"));
        }
    };
    let done = redrive(&ctx.store, &which).await?;
    Ok(Json(json!({ "redriven": done })))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/relay/parked/discard",
    tag = "admin",
    operation_id = "discard_parked",
    summary = "Discard parked rows by id",
    request_body = ParkedBody,
    responses(
        (status = 200, description = "The ids discarded", body = Discarded),
        (status = 400, description = "No ids, or all (`invalid_request`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The body does not fit", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn http_parked_discard(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Json(b): Json<ParkedBody>,
) -> Result<Json<Value>, ApiError> {
    use crate::relay::parked::{Which, discard};
    if b.ids.is_empty() || b.all {
        return Err(ApiError::bad_request("invalid_request").with(
            "reason",
            "give the ids to discard (all is not accepted here)",
        ));
    }
    let done = discard(&ctx.store, &Which::Ids(b.ids)).await?;
    Ok(Json(json!({ "discarded": done })))
}

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(http_dlq_list))
        .routes(routes!(http_dlq_show))
        .routes(routes!(http_dlq_redrive))
        .routes(routes!(http_replay))
        .routes(routes!(http_parked_list))
        .routes(routes!(http_parked_redrive))
        .routes(routes!(http_parked_discard))
}
