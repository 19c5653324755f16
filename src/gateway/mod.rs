//! The ingest gateway: authenticated event ingest (`/api/v1/events/…`), signed webhooks
//! (`/webhooks/…`), the allowlist in routes.yaml, rate limits (per client address before
//! authentication, per principal after), and operator endpoints for API keys and routes. Accepted events go to the outbox through group commit.

pub mod addresses;
pub mod admin;
pub mod auth;
pub mod ingest;
pub mod ratelimit;
pub mod routes;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post};
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;

pub fn router() -> Router<AppContext> {
    Router::new()
        .route("/api/v1/events/{route}", post(ingest::post_one))
        .route("/api/v1/events/{route}/batch", post(ingest::post_batch))
        .route("/webhooks/{name}", post(webhooks::receive))
        .route(
            "/api/v1/admin/apikeys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route("/api/v1/admin/apikeys/{name}", delete(admin::revoke_key))
        .route("/api/v1/admin/routes", get(admin::routes))
        .route("/api/v1/whoami", get(admin::whoami))
}

/// Background upkeep of the gateway role: watch routes.yaml, refresh JWKS, and prune old
/// idempotency records, webhook ids and idle rate-limit buckets.
pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    ctx.routes.watch(shutdown.clone());
    let jwks_every = Duration::from_secs(ctx.config.auth.jwks_refresh_secs.max(10));
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    let mut jwks = tokio::time::interval(jwks_every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = jwks.tick() => {
                if let Some(j) = ctx.auth.jwt.jwks()
                    && let Err(e) = j.refresh().await {
                        tracing::warn!(error = %e, "JWKS refresh failed");
                    }
            }
            _ = prune.tick() => {
                ctx.rate_limiter.prune();
                if let Err(e) = admin::prune_records(&ctx).await {
                    tracing::warn!(error = %e, "pruning idempotency records failed");
                }
            }
        }
    }
}
