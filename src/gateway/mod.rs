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

use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppContext;

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
        .routes(routes!(ingest::post_one))
        .routes(routes!(ingest::post_batch))
        .routes(routes!(webhooks::receive))
        .routes(routes!(admin::list_keys, admin::create_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::routes))
        .routes(routes!(admin::whoami))
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
