//! `GET /status` (HTML for people) and `GET /status.json` (the same document for machines),
//! public and cached for a couple of seconds; and the readiness verdict `/readyz` gives from
//! the same store and log checks.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::{Check, Component, checks};
use crate::app::AppContext;

pub fn router() -> Router<AppContext> {
    Router::new()
        .route("/status", get(page))
        .route("/status.json", get(json))
}

const CACHE: &str = "public, max-age=5";

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
