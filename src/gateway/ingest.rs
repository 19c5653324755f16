//! `POST /api/v1/events/{route}` and `/batch`: authenticate, look the route up in the
//! allowlist, validate and encode the JSON, append to the outbox through group commit, and
//! answer 202 only once the transaction holding the event has committed.
//!
//! Batch semantics are all-or-nothing: every event is validated first; if one is invalid the
//! answer is 400 naming its index and field, and nothing is stored.

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{Instrument, Span};

use super::auth::{Principal, PrincipalKind};
use super::routes::RouteSpec;
use crate::app::AppContext;
use crate::events::{self, EventMeta};
use crate::http::error::ApiError;
use crate::outbox::{AppendError, AppendOutcome, AppendRequest, Guard, NewEvent};
use crate::schema::SchemaError;
use crate::telemetry::tracing::{context, spans};

/// The request body, with the configured limit (→ 413 as JSON).
pub struct Body(pub Bytes);

impl FromRequest<AppContext> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, ctx: &AppContext) -> Result<Self, Self::Rejection> {
        read_limited(req, ctx.config.gateway.body_limit_bytes)
            .await
            .map(Body)
    }
}

/// Reads a request body of at most `limit` bytes (more → `413 payload_too_large`, refused
/// from `Content-Length` before reading when the client sends one).
pub async fn read_limited(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            .with("limit_bytes", limit as u64)
    };
    if let Some(len) = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_large())
}

/// Parses a body with the strict parser (`crate::http::json`): `400 malformed_json`, or
/// `400 duplicate_key` naming the key.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    crate::http::json::parse(body).map_err(ApiError::from)
}

pub fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The answer to a payload the schema or the topic's rules refuse: `400 {code}` with the
/// field and reason (a broken rule answers with the rule's own code and details).
pub fn schema_error(e: SchemaError, code: &str, index: Option<usize>) -> ApiError {
    let mut err = match e {
        SchemaError::Invalid(f) => ApiError::bad_request(code)
            .with("field", f.field)
            .with("reason", f.reason),
        SchemaError::Rule(v) => {
            let mut err = ApiError::bad_request(v.code)
                .with("field", v.field)
                .with("reason", v.reason);
            for (k, d) in v.details {
                err = err.with(k, d);
            }
            err
        }
        SchemaError::UnknownTopic(t) => {
            ApiError::internal(format!("route points at unknown topic {t}"))
        }
        other => ApiError::bad_request(code).with("reason", other.to_string()),
    };
    if let Some(i) = index {
        err = err.with("index", i as u64);
    }
    err
}

/// Refuses an event the configured log cannot carry (`413 event_too_large`): its encoded
/// record (key + value + headers + framing) must fit `log.max_message_bytes`, or the relay
/// could never send it.
fn fits_log(ctx: &AppContext, events: &[NewEvent]) -> Result<(), ApiError> {
    let limit = ctx.config.log.max_message_bytes;
    for (i, ev) in events.iter().enumerate() {
        let size = events::record_size(ev);
        if size > limit {
            let mut err = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large")
                .with("size_bytes", size as u64)
                .with("limit_bytes", limit as u64)
                .with(
                    "reason",
                    "the encoded event (key, value, headers and framing) is larger than the log \
                     carries (log.max_message_bytes)",
                );
            if events.len() > 1 {
                err = err.with("index", i as u64);
            }
            return Err(err);
        }
    }
    Ok(())
}

/// Applies "users act only on their own data" and picks the key.
/// Users: `user_id` (if the schema has it) must be the caller and is filled in when missing;
/// the key is the caller. Services: `X-Event-Key`, else the payload's `user_id`, else the
/// service's own id.
fn own_data(
    ctx: &AppContext,
    topic: &str,
    p: &Principal,
    headers: &HeaderMap,
    payload: &mut Value,
) -> Result<String, ApiError> {
    let has_user_id = ctx
        .schemas
        .topic(topic)
        .is_some_and(|ts| matches!(&ts.schema, apache_avro::Schema::Record(r) if r.lookup.contains_key("user_id")));
    let obj = payload.as_object_mut();
    match (p.kind, obj) {
        (PrincipalKind::User, Some(obj)) if !p.admin => {
            if has_user_id {
                match obj.get("user_id") {
                    Some(Value::String(u)) if u != &p.id => {
                        return Err(ApiError::forbidden(
                            "user_id must be the authenticated user",
                        ));
                    }
                    None | Some(Value::Null) => {
                        obj.insert("user_id".into(), Value::String(p.id.clone()));
                    }
                    _ => {}
                }
                if !obj.contains_key("email")
                    && let Some(e) = &p.email
                {
                    obj.insert("email".into(), Value::String(e.clone()));
                }
            }
            Ok(p.id.clone())
        }
        (_, obj) => Ok(header_str(headers, "x-event-key")
            .map(str::to_string)
            .or_else(|| {
                obj.and_then(|o| o.get("user_id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| p.id.clone())),
    }
}

/// The span of accepting events for `topic`; the events name it as their parent.
pub fn publish_span(ctx: &AppContext, topic: &str, count: usize) -> Span {
    spans::publish(spans::messaging_system(ctx.log.name()), topic, count)
}

/// The `traceparent` events accepted under `span` carry: the span's own, else the caller's.
pub fn traceparent_for(span: &Span, headers: &HeaderMap) -> Option<String> {
    context::traceparent(span).or_else(|| header_str(headers, "traceparent").map(str::to_string))
}

fn meta_from(
    headers: &HeaderMap,
    source: String,
    p: &Principal,
    idem: Option<&str>,
    span: &Span,
) -> EventMeta {
    let mut extra = crate::outbox::Headers::new();
    extra.insert("principal".into(), p.id.clone());
    EventMeta {
        source,
        traceparent: traceparent_for(span, headers),
        correlation_id: header_str(headers, "x-correlation-id").map(str::to_string),
        idempotency_key: idem.map(str::to_string),
        extra,
    }
}

fn lookup_route(ctx: &AppContext, route: &str, p: &Principal) -> Result<RouteSpec, ApiError> {
    let table = ctx.routes.current();
    let spec = table
        .routes
        .get(route)
        .cloned()
        .ok_or_else(|| ApiError::not_found("unknown_route").with("route", route.to_string()))?;
    spec.permits(p).map_err(|reason| {
        ctx.metrics
            .events_rejected
            .with_label_values(&[&spec.topic, "forbidden"])
            .inc();
        ApiError::forbidden(reason).with("route", route.to_string())
    })?;
    Ok(spec)
}

fn idempotency(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match header_str(headers, "idempotency-key") {
        Some(k) if k.len() > 255 => Err(ApiError::bad_request("invalid_idempotency_key")
            .with("reason", "longer than 255 characters")),
        other => Ok(other),
    }
}

fn fingerprint(route: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// Appends through group commit and turns the outcome into the HTTP answer.
pub async fn commit(
    ctx: &AppContext,
    topic: &str,
    events: Vec<NewEvent>,
    guard: Option<Guard>,
    response: Value,
) -> Result<Response, ApiError> {
    let n = events.len() as u64;
    let rejected = |reason: &str| {
        spans::fail(&Span::current(), reason);
        ctx.metrics
            .events_rejected
            .with_label_values(&[topic, reason])
            .inc_by(n);
    };
    fits_log(ctx, &events).inspect_err(|_| rejected("event_too_large"))?;
    match ctx.appender.append(AppendRequest { events, guard }).await {
        Ok(AppendOutcome::Committed) => {
            ctx.metrics
                .events_accepted
                .with_label_values(&[topic])
                .inc_by(n);
            tracing::debug!(topic, events = n, "events accepted");
            Ok((StatusCode::ACCEPTED, Json(response)).into_response())
        }
        Ok(AppendOutcome::Replayed { response }) => {
            let body: Value = serde_json::from_str(&response).unwrap_or(Value::Null);
            let mut r = (StatusCode::ACCEPTED, Json(body)).into_response();
            r.headers_mut().insert(
                "idempotency-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            Ok(r)
        }
        Ok(AppendOutcome::KeyConflict) => {
            rejected("idempotency_key_reused");
            Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").with(
                    "reason",
                    "this Idempotency-Key was used with a different request",
                ),
            )
        }
        Ok(AppendOutcome::Duplicate) => {
            rejected("replayed_message");
            Err(ApiError::new(StatusCode::CONFLICT, "replayed_message")
                .with("reason", "this webhook message id was already accepted"))
        }
        Err(e) => {
            rejected(e.kind());
            Err(append_error(e))
        }
    }
}

/// The answer when group commit could not take or store a request.
fn append_error(e: AppendError) -> ApiError {
    let retry_later = |err: ApiError| err.header(axum::http::header::RETRY_AFTER, "1");
    match e {
        AppendError::Closed => ApiError::unavailable("shutting down"),
        AppendError::Overloaded(what) => retry_later(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded")
                .with("reason", format!("the group-commit queue is full ({what})")),
        ),
        AppendError::Store(e) => {
            tracing::error!(error = %e, "append failed");
            retry_later(ApiError::unavailable("store unavailable"))
        }
        AppendError::Rejected(detail) => {
            // The store's message stays in the log; the caller learns what it can act on.
            tracing::warn!(error = %detail, "the store refused an event's data");
            ApiError::bad_request("invalid_event")
                .with("reason", "the store cannot hold this event's data")
        }
        AppendError::Internal(e) => ApiError::internal(e),
    }
}

crate::doc_schema!(
    /// An accepted event: its id and topic.
    Accepted = {"type": "object", "required": ["event_id", "topic"], "properties": {
        "event_id": {"type": "string", "description": "The event's id (UUIDv7)"},
        "topic": {"type": "string"}}}
);

crate::doc_schema!(
    /// An accepted batch: the topic and the events' ids, in order.
    AcceptedBatch = {"type": "object", "required": ["topic", "count", "event_ids"], "properties": {
        "topic": {"type": "string"},
        "count": {"type": "integer", "minimum": 1},
        "event_ids": {"type": "array", "items": {"type": "string"}}}}
);

/// Posts one event to an allowlisted route; `/api/v1/events/<name>` below documents each
/// route's body.
#[utoipa::path(
    post,
    path = "/api/v1/events/{route}",
    tag = "events",
    operation_id = "post_event",
    summary = "Post one event to a route",
    params(
        ("route" = String, Path, description = "A route of routes.yaml"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and body answer the first answer again (at most 255 characters)"),
        ("X-Event-Key" = Option<String>, Header, description = "Services: the event key (default: the payload's user_id, else the service id)"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Carried on the event"),
    ),
    request_body(content = Object, description = "The event, as the route's topic schema describes it (see the per-route operations)"),
    responses(
        (status = 202, description = "Stored durably (the transaction holding it has committed); `Idempotency-Replayed: true` on a replay", body = Accepted),
        (status = 400, description = "Malformed JSON (`malformed_json`, `duplicate_key`) or the event does not fit the schema or its rules (`invalid_event` with `field` and `reason`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "The caller may not post to this route, or names another user", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such route (`unknown_route`)", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "The body or the encoded event is too large (`payload_too_large`, `event_too_large`)", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body (`idempotency_key_reused`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn post_one(
    State(ctx): State<AppContext>,
    principal: Principal,
    Path(route): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let spec = lookup_route(&ctx, &route, &principal)?;
    let mut payload = parse_json(&body).inspect_err(|_| {
        ctx.metrics
            .events_rejected
            .with_label_values(&[&spec.topic, "malformed_json"])
            .inc();
    })?;
    let key = own_data(&ctx, &spec.topic, &principal, &headers, &mut payload)
        .inspect_err(|_| reject(&ctx, &spec.topic, "forbidden", 1))?;
    let idem = idempotency(&headers)?;
    let span = publish_span(&ctx, &spec.topic, 1);
    let meta = meta_from(
        &headers,
        format!("/gateway/routes/{route}"),
        &principal,
        idem,
        &span,
    );
    let ev = events::build(&ctx.schemas, &spec.topic, &key, &payload, &meta).map_err(|e| {
        spans::fail(&span, "invalid_event");
        reject(&ctx, &spec.topic, "invalid_event", 1);
        schema_error(e, "invalid_event", None)
    })?;
    tracing::debug!(parent: &span, event_id = %ev.event_id, "event built");
    let response = json!({ "event_id": ev.event_id, "topic": spec.topic });
    let guard = idem.map(|k| Guard::Idempotency {
        principal: principal.id.clone(),
        key: k.to_string(),
        fingerprint: fingerprint(&route, &body),
        response: response.to_string(),
    });
    commit(&ctx, &spec.topic, vec![ev], guard, response)
        .instrument(span)
        .await
}

/// Counts refused events by topic and reason.
fn reject(ctx: &AppContext, topic: &str, reason: &str, n: u64) {
    ctx.metrics
        .events_rejected
        .with_label_values(&[topic, reason])
        .inc_by(n);
}

/// Posts a batch to an allowlisted route: all events are stored, or none.
#[utoipa::path(
    post,
    path = "/api/v1/events/{route}/batch",
    tag = "events",
    operation_id = "post_events",
    summary = "Post a batch of events to a route, all or none",
    params(
        ("route" = String, Path, description = "A route of routes.yaml"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe (at most 255 characters)"),
        ("X-Event-Key" = Option<String>, Header, description = "Services: the key of every event"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Carried on the events"),
    ),
    request_body(content = Object, description = "An array of events, or `{\"events\": [...]}`"),
    responses(
        (status = 202, description = "Every event stored durably", body = AcceptedBatch),
        (status = 400, description = "Malformed JSON, not a batch (`invalid_batch`), or an event does not fit (`invalid_event` with `index`, `field`, `reason`); nothing is stored", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "The caller may not post to this route", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such route (`unknown_route`)", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "Too many events (`batch_too_large`) or too many bytes", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn post_batch(
    State(ctx): State<AppContext>,
    principal: Principal,
    Path(route): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let spec = lookup_route(&ctx, &route, &principal)?;
    let doc = parse_json(&body).inspect_err(|_| reject(&ctx, &spec.topic, "malformed_json", 1))?;
    let items = match doc {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("events") {
            Some(Value::Array(a)) => a,
            _ => {
                reject(&ctx, &spec.topic, "invalid_batch", 1);
                return Err(ApiError::bad_request("invalid_batch")
                    .with("reason", "expected an array or {\"events\": [...]}"));
            }
        },
        _ => {
            reject(&ctx, &spec.topic, "invalid_batch", 1);
            return Err(ApiError::bad_request("invalid_batch")
                .with("reason", "expected an array or {\"events\": [...]}"));
        }
    };
    let max = ctx.config.gateway.batch_max_events;
    if items.is_empty() {
        reject(&ctx, &spec.topic, "invalid_batch", 1);
        return Err(ApiError::bad_request("invalid_batch").with("reason", "the batch is empty"));
    }
    if items.len() > max {
        reject(&ctx, &spec.topic, "batch_too_large", items.len() as u64);
        return Err(
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large")
                .with("max_events", max as u64)
                .with("count", items.len() as u64),
        );
    }
    let idem = idempotency(&headers)?;
    let count = items.len();
    let span = publish_span(&ctx, &spec.topic, count);
    let meta = meta_from(
        &headers,
        format!("/gateway/routes/{route}"),
        &principal,
        idem,
        &span,
    );
    let mut events = Vec::with_capacity(count);
    for (i, mut payload) in items.into_iter().enumerate() {
        let key = own_data(&ctx, &spec.topic, &principal, &headers, &mut payload).map_err(|e| {
            reject(&ctx, &spec.topic, "forbidden", count as u64);
            e.with("index", i as u64)
        })?;
        let ev = events::build(&ctx.schemas, &spec.topic, &key, &payload, &meta).map_err(|e| {
            spans::fail(&span, "invalid_event");
            reject(&ctx, &spec.topic, "invalid_event", count as u64);
            schema_error(e, "invalid_event", Some(i))
        })?;
        events.push(ev);
    }
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let response = json!({ "topic": spec.topic, "count": ids.len(), "event_ids": ids });
    let guard = idem.map(|k| Guard::Idempotency {
        principal: principal.id.clone(),
        key: k.to_string(),
        fingerprint: fingerprint(&format!("{route}/batch"), &body),
        response: response.to_string(),
    });
    commit(&ctx, &spec.topic, events, guard, response)
        .instrument(span)
        .await
}
