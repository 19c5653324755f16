//! Durable saga timers: rows in `saga_timers` with `fire_at`, one per (kind, request). Any
//! sagas-role instance claims due timers (`FOR UPDATE SKIP LOCKED` on PostgreSQL) with a
//! lease, does the step's I/O outside any transaction, then fires the timer in a transaction
//! of its own that applies the state change and appends the step's events — only if it
//! still holds the claim. A crashed holder's lease runs out and the timer fires elsewhere
//! (or after a restart); timers that came due while every instance was down fire at once.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::store::{Backend, Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx};

/// The kinds of timer.
pub mod kind {
    /// No upload arrived in time: expire the saga and refund.
    pub const UPLOAD_TTL: &str = "upload_ttl";
    /// Move the received upload to `files/` (re-armed with backoff after a failure).
    pub const UPLOAD_MOVE: &str = "upload_move";
    /// Remove an object that must go (an expired or refused upload); retried until it is gone.
    pub const REMOVE_OBJECT: &str = "remove_object";
    /// After an ended upload's URL has expired, remove whatever landed at its upload key
    /// (`upload/sweep.rs`); runs the `REMOVE_OBJECT` step.
    pub const UPLOAD_SWEEP: &str = "upload_sweep";
}

/// Most timers one instance claims per round.
const BATCH: i64 = 32;
/// Most timers one instance works on at once.
const CONCURRENCY: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Timer {
    pub id: i64,
    pub kind: String,
    pub request_id: String,
    pub fire_at: i64,
    pub attempts: i64,
    pub payload: String,
    pub claimed_by: Option<String>,
}

impl Timer {
    pub fn payload(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or(Value::Null)
    }
}

const COLUMNS: &str = "id, kind, request_id, fire_at, attempts, payload, claimed_by";

/// Arms (or re-arms) the `kind` timer of `request_id` to fire at `fire_at` (unix micros). A
/// re-armed timer loses any claim on it, so its current holder will not fire it.
pub async fn schedule(
    tx: &mut Tx,
    kind: &str,
    request_id: &str,
    fire_at: i64,
    payload: &Value,
) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO saga_timers (kind, request_id, fire_at, attempts, payload, created_at) \
             VALUES ($1, $2, $3, 0, $4, $5) \
             ON CONFLICT (kind, request_id) DO UPDATE SET fire_at = excluded.fire_at, attempts = 0, \
             payload = excluded.payload, claimed_by = NULL, claimed_until = NULL",
        )
        .bind(kind)
        .bind(request_id)
        .bind(fire_at)
        .bind(payload.to_string())
        .bind(now_micros())
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Disarms the `kind` timer of `request_id`.
pub async fn cancel(tx: &mut Tx, kind: &str, request_id: &str) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        sqlx::query("DELETE FROM saga_timers WHERE kind = $1 AND request_id = $2")
            .bind(kind)
            .bind(request_id)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Wakes this process's timer loop once `tx` commits (for a timer due at once).
pub fn wake_after_commit(tx: &mut Tx, ctx: &AppContext) {
    let wake = ctx.media.timer_wake.clone();
    tx.after_commit(move || wake.notify_one());
}

/// Claims up to `limit` due timers for `owner` until `lease_until`.
pub async fn claim(
    store: &Store,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<Timer>, StoreError> {
    let lock = match store.backend() {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE saga_timers SET claimed_by = $1, claimed_until = $2 WHERE id IN (\
           SELECT id FROM saga_timers WHERE fire_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) \
           ORDER BY fire_at LIMIT $4 {lock}) \
         RETURNING {COLUMNS}"
    );
    let mut tx = store.begin().await?;
    let timers: Vec<Timer> = on_tx!(tx, c => {
        sqlx::query_as(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *c)
            .await?
    });
    tx.commit().await?;
    Ok(timers)
}

/// When the next timer free to claim comes due (unix micros), if any.
pub async fn next_due(store: &Store, now: i64) -> Result<Option<i64>, StoreError> {
    Ok(on_read!(store, p => {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(fire_at) FROM saga_timers WHERE claimed_until IS NULL OR claimed_until < $1",
        )
        .bind(now)
        .fetch_one(p)
        .await?
    }))
}

/// Removes a fired timer; false when `t`'s claim was lost (re-armed, cancelled or taken over
/// after the lease), in which case the caller must roll back.
pub async fn finish(tx: &mut Tx, t: &Timer) -> Result<bool, StoreError> {
    let n = on_tx!(tx, c => {
        sqlx::query("DELETE FROM saga_timers WHERE id = $1 AND claimed_by = $2")
            .bind(t.id)
            .bind(t.claimed_by.as_deref())
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(n == 1)
}

/// Re-arms a claimed timer for `fire_at` with `attempts` and releases the claim; false when
/// the claim was lost.
pub async fn retry_at(
    tx: &mut Tx,
    t: &Timer,
    fire_at: i64,
    attempts: i64,
) -> Result<bool, StoreError> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE saga_timers SET fire_at = $3, attempts = $4, claimed_by = NULL, claimed_until = NULL \
             WHERE id = $1 AND claimed_by = $2",
        )
        .bind(t.id)
        .bind(t.claimed_by.as_deref())
        .bind(fire_at)
        .bind(attempts)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// The timers armed for `request_id` (tests, operators).
pub async fn for_request(store: &Store, request_id: &str) -> Result<Vec<Timer>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM saga_timers WHERE request_id = $1 ORDER BY id");
    Ok(on_read!(store, p => {
        sqlx::query_as(&sql).bind(request_id).fetch_all(p).await?
    }))
}

/// Exponential backoff: `initial_ms` × 2^(attempt-1), capped at ten minutes.
pub fn backoff(initial_ms: u64, attempt: i64) -> Duration {
    let exp = attempt.clamp(1, 20) as u32 - 1;
    let ms = initial_ms.max(1).saturating_mul(1u64 << exp);
    Duration::from_millis(ms.min(600_000))
}

/// Works on one claimed timer: the step's I/O, then its transaction.
async fn fire(ctx: &AppContext, t: Timer) {
    let r = match t.kind.as_str() {
        kind::UPLOAD_TTL => super::upload::expiry::on_ttl(ctx, &t).await,
        kind::UPLOAD_MOVE => super::upload::moving::on_move(ctx, &t).await,
        kind::REMOVE_OBJECT | kind::UPLOAD_SWEEP => super::upload::expiry::on_remove(ctx, &t).await,
        other => {
            tracing::error!(kind = other, id = t.id, "unknown timer kind; dropping it");
            drop_unknown(ctx, &t).await
        }
    };
    if let Err(e) = r {
        // The claim runs out and the timer is tried again then.
        tracing::warn!(kind = %t.kind, request_id = %t.request_id, error = %e, "saga timer failed; will retry after its lease");
    }
}

async fn drop_unknown(ctx: &AppContext, t: &Timer) -> Result<(), super::MediaError> {
    let mut tx = ctx.store.begin().await?;
    finish(&mut tx, t).await?;
    tx.commit().await?;
    Ok(())
}

/// The timer loop of the sagas role: sleep until the next timer is due (at most a poll
/// interval, or until a local wake-up), claim what is due, work on it.
pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let poll = Duration::from_millis(ctx.config.media.timer_poll_ms.max(10));
    let lease = Duration::from_secs(ctx.config.media.timer_lease_secs.max(1));
    let owner = ctx.media.instance.clone();
    tracing::info!(%owner, "saga timers started");
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let now = now_micros();
        // Claiming is a write; look first (a read) whether anything is due.
        let due = match next_due(&ctx.store, now).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading saga timers failed");
                None
            }
        };
        if due.is_none_or(|d| d > now) {
            let wait = due
                .map(|d| Duration::from_micros((d - now).max(0) as u64))
                .unwrap_or(poll)
                .min(poll);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ctx.media.timer_wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let claimed = match claim(
            &ctx.store,
            &owner,
            now,
            now + lease.as_micros() as i64,
            BATCH,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming saga timers failed");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            // Another instance took them; look again after a poll interval.
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ctx.media.timer_wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        futures::stream::iter(claimed)
            .for_each_concurrent(CONCURRENCY, |t| fire(&ctx, t))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(100, 1), Duration::from_millis(100));
        assert_eq!(backoff(100, 2), Duration::from_millis(200));
        assert_eq!(backoff(100, 3), Duration::from_millis(400));
        assert_eq!(backoff(1000, 40), Duration::from_millis(600_000));
    }
}
