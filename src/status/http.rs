//! `GET /status` (HTML for people) and `GET /status.json` (the same document for machines),
//! public and cached for a couple of seconds; and the readiness verdict `/readyz` gives from
//! the same store and log checks.

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Check, Component, checks};
use crate::app::AppContext;

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(json))
}

crate::doc_schema!(
    /// The status page's data: the overall state, each component with its 90 days, the probe,
    /// and the firing alerts of public rules.
    StatusDocument = {"type": "object", "required": ["title", "status", "updated_at", "components", "probe"], "properties": {
        "title": {"type": "string"},
        "status": {"type": "string", "enum": ["operational", "degraded", "down"]},
        "updated_at": {"type": "string"},
        "refresh_secs": {"type": "integer"},
        "components": {"type": "array", "items": {"type": "object", "required": ["name", "title", "state"], "properties": {
            "name": {"type": "string"}, "title": {"type": "string"},
            "state": {"type": "string", "enum": ["operational", "degraded", "down"]}}}},
        "probe": {"type": "object"},
        "alerts": {"type": "array", "items": {"type": "object", "required": ["rule", "severity", "since"], "properties": {
            "rule": {"type": "string"}, "severity": {"type": "string"}, "since": {"type": "string"},
            "summary": {"type": ["string", "null"]}}}}}}
);

const CACHE: &str = "public, max-age=5";

#[utoipa::path(
    get,
    path = "/status.json",
    tag = "meta",
    operation_id = "status_json",
    summary = "The status page's data",
    responses(
        (status = 200, description = "The status document (cached 5 s)", body = StatusDocument),
    )
)]
async fn json(State(ctx): State<AppContext>) -> Response {
    let doc = ctx.status.document(&ctx).await;
    (
        [
            (header::CACHE_CONTROL, CACHE),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        axum::Json(doc.as_ref().clone()),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/status",
    tag = "meta",
    operation_id = "status_page",
    summary = "The status page",
    responses(
        (status = 200, description = "HTML", content_type = "text/html", body = String),
    )
)]
async fn page(State(ctx): State<AppContext>) -> Response {
    let doc = ctx.status.document(&ctx).await;
    let now_ms = crate::store::now_micros() / 1000;
    (
        [(header::CACHE_CONTROL, CACHE)],
        Html(super::page::render(&doc, now_ms)),
    )
        .into_response()
}

/// Readiness: the store must answer (without it no role can work). The log is checked and
/// reported too, but does not make the instance unready: with the broker away the gateway
/// still accepts into the outbox, which is the point of having one.
pub async fn readiness(ctx: &AppContext) -> (bool, Vec<(Component, Check)>) {
    let (store, log) = tokio::join!(checks::store(ctx), checks::log(ctx));
    let ready = store.state != super::State::Down;
    (
        ready,
        vec![(Component::Store, store), (Component::Log, log)],
    )
}
