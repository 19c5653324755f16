//! Outbox retention: published rows (the embedded log's records, or rows the Kafka relay has
//! delivered) and inbox records older than `log.retention_hours` are deleted. With the
//! embedded log this is all the relay role does, and it never deletes a record that a known
//! consumer group (one with a committed position in `consumer_offsets`) has not read yet: the
//! slowest group holds retention back on each topic, and says so (a warning, the
//! `substrate_retention_held_rows{group}` gauge, the log component degraded on /status) until
//! it catches up or an operator forgets it (`substrate consumers forget --group G`).

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::store::{Store, StoreError, now_micros};
use crate::{on_read, on_write};

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

/// The oldest time a record may have and still be kept.
fn cut(ctx: &AppContext) -> i64 {
    now_micros() - (ctx.config.log.retention_hours as i64) * 3_600_000_000
}

/// Rows no known group still has to read (embedded log: a group's position is the next
/// record it reads on the topic).
const READ_BY_ALL: &str = "NOT EXISTS (SELECT 1 FROM consumer_offsets co WHERE co.topic = outbox.topic AND co.next_offset <= outbox.id)";

/// Deletes published outbox rows and inbox records older than `log.retention_hours`, except,
/// with the embedded log, records a known group has not read yet.
pub async fn enforce_retention(ctx: &AppContext) -> Result<(u64, u64), StoreError> {
    let cut = cut(ctx);
    let hold = if ctx.config.is_embedded_log() {
        format!(" AND {READ_BY_ALL}")
    } else {
        String::new()
    };
    let sql =
        format!("DELETE FROM outbox WHERE published_at IS NOT NULL AND created_at < $1{hold}");
    let rows = on_write!(ctx.store, p => {
        sqlx::query(&sql)
            .bind(cut)
            .execute(p)
            .await?
            .rows_affected()
    });
    let inbox = crate::consumers::inbox::prune(&ctx.store, cut).await?;
    if rows + inbox > 0 {
        tracing::info!(outbox_rows = rows, inbox_rows = inbox, "retention applied");
    }
    if ctx.config.is_embedded_log() {
        report_held(ctx, &held(ctx).await?);
    }
    Ok((rows, inbox))
}

/// A group that keeps records past retention because it has not read them yet.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub group: String,
    pub topic: String,
    /// Records older than the retention period the group has yet to read.
    pub rows: i64,
}

/// The groups holding retention back now (embedded log).
pub async fn held(ctx: &AppContext) -> Result<Vec<Held>, StoreError> {
    let rows: Vec<(String, String, i64)> = on_read!(ctx.store, p => {
        sqlx::query_as(
            "SELECT co.group_name, co.topic, \
             (SELECT COUNT(*) FROM outbox o WHERE o.topic = co.topic AND o.id >= co.next_offset AND o.created_at < $1) \
             FROM consumer_offsets co ORDER BY co.group_name, co.topic",
        )
        .bind(cut(ctx))
        .fetch_all(p)
        .await?
    });
    Ok(rows
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(group, topic, rows)| Held { group, topic, rows })
        .collect())
}

fn report_held(ctx: &AppContext, held: &[Held]) {
    let gauge = &ctx.metrics.retention_held_rows;
    gauge.reset();
    for h in held {
        tracing::warn!(group = %h.group, topic = %h.topic, rows = h.rows, "retention held back: a consumer group has not read these records yet (if the group is gone for good: substrate consumers forget --group {})", h.group);
        gauge.with_label_values(&[&h.group]).add(h.rows);
    }
}

/// A group's committed position on a topic (embedded log).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GroupPosition {
    pub group: String,
    pub topic: String,
    pub next_offset: i64,
    pub updated_at: i64,
}

pub async fn positions(store: &Store) -> Result<Vec<GroupPosition>, StoreError> {
    let rows = on_read!(store, p => {
        sqlx::query_as::<_, GroupPosition>(
            "SELECT group_name AS \"group\", topic, next_offset, updated_at FROM consumer_offsets ORDER BY group_name, topic",
        )
        .fetch_all(p)
        .await?
    });
    Ok(rows)
}

/// Forgets a decommissioned group: its positions and lease go, so it no longer holds retention
/// back (if it ever runs again it starts over from the oldest record kept). Returns the
/// positions removed.
pub async fn forget_group(store: &Store, group: &str) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let n = crate::on_tx!(tx, c => {
        let n = sqlx::query("DELETE FROM consumer_offsets WHERE group_name = $1")
            .bind(group)
            .execute(&mut *c)
            .await?
            .rows_affected();
        // Its lease lapses now (the row stays, so its epoch never goes back).
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1")
            .bind(crate::log::embedded::lease_name(group))
            .execute(&mut *c)
            .await?;
        n
    });
    tx.commit().await?;
    Ok(n)
}
