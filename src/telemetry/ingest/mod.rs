//! Telemetry ingest: the endpoints agents already speak, each turned into one canonical batch
//! (`crate::telemetry::model`) and accepted as ONE outbox event per request (topic
//! `internal.telemetry.batches`, keyed by org), committed before the `202`:
//! - `POST /prometheus/api/v1/write`: Prometheus remote write 1.0 (protobuf, snappy block);
//! - `POST /api/v1/ingest/metrics` and `/api/v1/ingest/logs`: native JSON (seed 003);
//! - `POST /loki/api/v1/push`: the Loki push API, JSON, or protobuf (snappy) (`loki.rs`);
//! - `POST /v1/metrics` and `POST /v1/logs`: OTLP/HTTP, protobuf or JSON, gzip or not.
//!
//! Every request is authenticated and its org taken from the credentials (`tenant.rs`).
//! Bodies are bounded before and after decompression, then validated whole
//! (`validate.rs`); a refused request stores nothing. A batch larger than
//! `telemetry.ingest.claim_check_bytes` is written to the object store first and the event
//! carries its key (a claim check), so the log never carries more than it can.

pub mod config;
pub mod decode;
pub mod formats;
pub mod loki;
pub mod otlp;
pub mod validate;

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use prost::Message;
use serde_json::json;
use tracing::Instrument;

pub use config::IngestConfig;

use super::model::Batch;
use super::tenant::{Access, tenant};
use crate::app::AppContext;
use crate::events::{self, EventMeta};
use crate::gateway::auth::Principal;
use crate::gateway::ingest::{commit, publish_span, read_limited, traceparent_for};
use crate::http::error::ApiError;

/// The topic of accepted telemetry batches.
pub const TOPIC: &str = "internal.telemetry.batches";

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(remote_write))
        .routes(utoipa_axum::routes!(native_metrics))
        .routes(utoipa_axum::routes!(native_logs))
        .routes(utoipa_axum::routes!(loki_push))
        .routes(utoipa_axum::routes!(otlp_metrics))
        .routes(utoipa_axum::routes!(otlp_logs))
}

/// The answers of every ingest endpoint, documented once.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its documentation is used
enum IngestAnswers {
    /// Accepted: the batch is durable in the outbox
    #[response(status = 202)]
    Accepted(#[to_schema] TelemetryAccepted),
    /// A body that does not decode or breaks a limit (the error names it)
    #[response(status = 400)]
    Invalid(#[to_schema] crate::http::openapi::ErrorBody),
    /// Needs the telemetry:write scope and an org
    #[response(status = 403)]
    Forbidden(#[to_schema] crate::http::openapi::ErrorBody),
    /// The body, or its decompressed size, is over the limit
    #[response(status = 413)]
    TooLarge(#[to_schema] crate::http::openapi::ErrorBody),
    /// An unsupported content type or encoding
    #[response(status = 415)]
    Unsupported(#[to_schema] crate::http::openapi::ErrorBody),
}

/// The accepted answer (its fields are described in docs/telemetry.md).
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
struct TelemetryAccepted(serde_json::Map<String, serde_json::Value>);

/// A telemetry request body, bounded by `telemetry.ingest.body_limit_bytes`.
pub struct TelemetryBody(pub Bytes);

impl FromRequest<AppContext> for TelemetryBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, ctx: &AppContext) -> Result<Self, Self::Rejection> {
        read_limited(req, ctx.config.telemetry.ingest.body_limit_bytes)
            .await
            .map(TelemetryBody)
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// A JSON body, with its `Content-Encoding` undone.
fn json_body(
    ctx: &AppContext,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<serde_json::Value, ApiError> {
    let raw = decode::content(
        headers,
        body,
        ctx.config.telemetry.ingest.decoded_limit_bytes,
    )?;
    crate::gateway::ingest::parse_json(&raw)
}

#[utoipa::path(
    post,
    path = "/prometheus/api/v1/write",
    tag = "telemetry",
    operation_id = "remote_write",
    summary = "Prometheus remote write 1.0 (protobuf, snappy block format)",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A snappy-compressed WriteRequest; Prometheus sends it as application/x-protobuf, and any content type is accepted"),
    responses(IngestAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn remote_write(
    State(ctx): State<AppContext>,
    p: Principal,
    headers: HeaderMap,
    TelemetryBody(body): TelemetryBody,
) -> Result<Response, ApiError> {
    let org = tenant(&p, Access::Write)?;
    let batch = decode::remote_write(&body, ctx.config.telemetry.ingest.decoded_limit_bytes)?;
    accept(&ctx, &p.id, &headers, &org, "prometheus", batch).await
}

#[utoipa::path(
    post,
    path = "/api/v1/ingest/metrics",
    tag = "telemetry",
    operation_id = "native_metrics",
    summary = "Metrics, native JSON (one or a batch)",
    request_body(content = Object, content_type = "application/json"),
    responses(IngestAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn native_metrics(
    State(ctx): State<AppContext>,
    p: Principal,
    headers: HeaderMap,
    TelemetryBody(body): TelemetryBody,
) -> Result<Response, ApiError> {
    let org = tenant(&p, Access::Write)?;
    let batch = formats::native_metrics(json_body(&ctx, &headers, body)?, now_ns())?;
    accept(&ctx, &p.id, &headers, &org, "native", batch).await
}

#[utoipa::path(
    post,
    path = "/api/v1/ingest/logs",
    tag = "telemetry",
    operation_id = "native_logs",
    summary = "Log lines, native JSON (one or a batch)",
    request_body(content = Object, content_type = "application/json"),
    responses(IngestAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn native_logs(
    State(ctx): State<AppContext>,
    p: Principal,
    headers: HeaderMap,
    TelemetryBody(body): TelemetryBody,
) -> Result<Response, ApiError> {
    let org = tenant(&p, Access::Write)?;
    let batch = formats::native_logs(json_body(&ctx, &headers, body)?, now_ns())?;
    accept(&ctx, &p.id, &headers, &org, "native", batch).await
}

#[utoipa::path(
    post,
    path = "/loki/api/v1/push",
    tag = "telemetry",
    operation_id = "loki_push",
    summary = "The Loki push API (JSON, or snappy-compressed protobuf)",
    request_body(content = Object, content_type = "application/json", description = "A JSON push; or, as application/x-protobuf, a snappy block holding a logproto.PushRequest"),
    responses(IngestAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn loki_push(
    State(ctx): State<AppContext>,
    p: Principal,
    headers: HeaderMap,
    TelemetryBody(body): TelemetryBody,
) -> Result<Response, ApiError> {
    let org = tenant(&p, Access::Write)?;
    let ct = crate::gateway::ingest::header_str(&headers, "content-type").unwrap_or("");
    if ct.starts_with("application/x-protobuf") {
        let limit = ctx.config.telemetry.ingest.decoded_limit_bytes;
        let batch = loki::push(&body, limit)?;
        return accept(&ctx, &p.id, &headers, &org, "loki", batch).await;
    }
    let batch = formats::loki(json_body(&ctx, &headers, body)?)?;
    accept(&ctx, &p.id, &headers, &org, "loki", batch).await
}

/// A body with its `Content-Encoding` undone, and whether it is JSON (else protobuf).
fn otlp_body(
    ctx: &AppContext,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Bytes, bool), ApiError> {
    let raw = decode::content(
        headers,
        body,
        ctx.config.telemetry.ingest.decoded_limit_bytes,
    )?;
    let ct = crate::gateway::ingest::header_str(headers, "content-type").unwrap_or("");
    Ok((raw, otlp::is_json(ct)))
}

#[utoipa::path(
    post,
    path = "/v1/metrics",
    tag = "telemetry",
    operation_id = "otlp_metrics",
    summary = "OTLP/HTTP metrics (protobuf or JSON, gzip)",
    request_body(content = Object, content_type = "application/json", description = "ExportMetricsServiceRequest; application/x-protobuf too"),
    responses(IngestAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn otlp_metrics(
    State(ctx): State<AppContext>,
    p: Principal,
    headers: HeaderMap,
    TelemetryBody(body): TelemetryBody,
) -> Result<Response, ApiError> {
    let org = tenant(&p, Access::Write)?;
    let (raw, json) = otlp_body(&ctx, &headers, body)?;
    let batch = otlp::metrics(&raw, json, &ctx.config.telemetry.ingest)?;
    accept(&ctx, &p.id, &headers, &org, "otlp", batch).await
}

#[utoipa::path(
    post,
    path = "/v1/logs",
    tag = "telemetry",
    operation_id = "otlp_logs",
    summary = "OTLP/HTTP logs (protobuf or JSON, gzip)",
    request_body(content = Object, content_type = "application/json", description = "ExportLogsServiceRequest; application/x-protobuf too"),
    responses(IngestAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn otlp_logs(
    State(ctx): State<AppContext>,
    p: Principal,
    headers: HeaderMap,
    TelemetryBody(body): TelemetryBody,
) -> Result<Response, ApiError> {
    let org = tenant(&p, Access::Write)?;
    let (raw, json) = otlp_body(&ctx, &headers, body)?;
    let batch = otlp::logs(&raw, json)?;
    accept(&ctx, &p.id, &headers, &org, "otlp", batch).await
}

/// The largest encoded batch that travels inside its event: `claim_check_bytes`, but never
/// more than the log carries once base64 (4/3) and the envelope (8 KiB of headroom) are added.
fn claim_threshold(ctx: &AppContext) -> usize {
    let fits = ctx.config.log.max_message_bytes.saturating_sub(8192) / 4 * 3;
    ctx.config.telemetry.ingest.claim_check_bytes.min(fits)
}

/// Validates `batch`, parks it in the object store when large, and commits its event, as
/// `principal` (its id goes into the event's headers). The ingest endpoints call it, and so
/// does the alerts role's self-scrape (`crate::alerts::rules::builtin`), so a batch takes one
/// path whoever sends it.
pub async fn accept(
    ctx: &AppContext,
    principal: &str,
    headers: &HeaderMap,
    org: &str,
    source: &str,
    mut batch: Batch,
) -> Result<Response, ApiError> {
    let cfg = &ctx.config.telemetry.ingest;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let counts = validate::check(&mut batch, cfg, validate::Window::around(now_ms, cfg))?;
    let mut response = json!({
        "series": counts.series, "samples": counts.samples, "lines": counts.lines,
        "dropped": counts.dropped,
    });
    if counts.series == 0 && counts.lines == 0 {
        // Nothing to keep (an empty push, or only NaN samples): no event.
        response["event_id"] = serde_json::Value::Null;
        return Ok((StatusCode::ACCEPTED, axum::Json(response)).into_response());
    }
    let encoded = batch.encode_to_vec();
    let (inline, claim) = if encoded.len() > claim_threshold(ctx) {
        let key = format!("telemetry/batches/{org}/{}.pb", uuid::Uuid::now_v7());
        ctx.objects
            .put(&key, Bytes::from(encoded))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "storing a telemetry batch failed");
                ApiError::unavailable("object store unavailable")
                    .header(axum::http::header::RETRY_AFTER, "1")
            })?;
        (String::new(), Some(key))
    } else {
        (
            base64::engine::general_purpose::STANDARD.encode(&encoded),
            None,
        )
    };
    let payload = json!({
        "version": 1, "org": org, "source": source, "series": counts.series,
        "samples": counts.samples, "lines": counts.lines, "batch": inline, "claim": claim,
    });
    let span = publish_span(ctx, TOPIC, 1);
    let mut extra = crate::outbox::Headers::new();
    extra.insert("principal".into(), principal.to_string());
    let meta = EventMeta {
        source: format!("/telemetry/{source}"),
        traceparent: traceparent_for(&span, headers),
        correlation_id: crate::gateway::ingest::header_str(headers, "x-correlation-id")
            .map(str::to_string),
        idempotency_key: None,
        extra,
    };
    let ev = events::build(&ctx.schemas, TOPIC, org, &payload, &meta)
        .map_err(|e| ApiError::internal(format!("building the telemetry event: {e}")))?;
    response["event_id"] = json!(ev.event_id);
    commit(ctx, TOPIC, vec![ev], None, response)
        .instrument(span)
        .await
}
