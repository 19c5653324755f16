//! Outbox retention: published rows (the embedded log's records, or rows the Kafka relay has
//! delivered) and inbox records older than `log.retention_hours` are deleted. With the
//! embedded log this is all the relay role does.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::on_write;
use crate::store::{StoreError, now_micros};

pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if let Err(e) = enforce_retention(&ctx).await {
                    tracing::warn!(error = %e, "retention pass failed");
                }
            }
        }
    }
}

/// Deletes published outbox rows and inbox records older than `log.retention_hours`.
pub async fn enforce_retention(ctx: &AppContext) -> Result<(u64, u64), StoreError> {
    let cut = now_micros() - (ctx.config.log.retention_hours as i64) * 3_600_000_000;
    let rows = on_write!(ctx.store, p => {
        sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND created_at < $1")
            .bind(cut)
            .execute(p)
            .await?
            .rows_affected()
    });
    let inbox = crate::consumers::inbox::prune(&ctx.store, cut).await?;
    if rows + inbox > 0 {
        tracing::info!(outbox_rows = rows, inbox_rows = inbox, "retention applied");
    }
    Ok((rows, inbox))
}
