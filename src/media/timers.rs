//! Durable saga timers: rows in `saga_timers` with `fire_at`, one per (kind, request). Any
//! sagas-role instance claims due timers (`FOR UPDATE SKIP LOCKED` on PostgreSQL) for
//! `media.timer_lease_secs` on the database's clock; every claim (and every re-arm) increments
//! the row's `claim_epoch`, the same fencing as `store::lease`. The holder does the step's I/O
//! outside any transaction (it is safe to repeat), then fires the timer in a transaction of its
//! own that applies the state change and appends the step's events — only if the row still
//! has the claim epoch it was claimed with (`finish`, `retry_at`); otherwise it rolls back.
//! Claims are not renewed during the I/O: a crashed or stalled holder's claim runs out and the
//! timer fires elsewhere (or after a restart), and the late holder's completion is refused, so
//! a step's effects happen once. Timers that came due while every instance was down fire at
//! once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::store::{Store, StoreError, Tx, dialect, now_micros};
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
    /// Which claim this is: completing the timer requires the row to still have it.
    pub claim_epoch: i64,
    /// Set when a completion under this claim was refused (for the metric).
    #[sqlx(skip)]
    pub lost: ClaimLost,
}

/// Whether a timer's completion was refused because its claim had passed on.
#[derive(Debug, Clone, Default)]
pub struct ClaimLost(Arc<AtomicBool>);

impl ClaimLost {
    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Claims are compared by their epoch; this flag is bookkeeping.
impl PartialEq for ClaimLost {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ClaimLost {}

impl Timer {
    pub fn payload(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or(Value::Null)
    }
}

const COLUMNS: &str = "id, kind, request_id, fire_at, attempts, payload, claimed_by, claim_epoch";

/// Arms (or re-arms) the `kind` timer of `request_id` to fire at `fire_at` (unix micros). A
/// re-armed timer loses any claim on it (its epoch moves on), so its current holder will not
/// fire it.
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
             payload = excluded.payload, claimed_by = NULL, claimed_until = NULL, \
             claim_epoch = saga_timers.claim_epoch + 1",
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

/// Claims up to `limit` due timers for `owner` for `lease` (database clock), each with a new
/// claim epoch.
pub async fn claim(
    store: &Store,
    owner: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Timer>, StoreError> {
    let now = dialect::now_micros(store.backend());
    let lock = dialect::skip_locked(store.backend());
    let sql = format!(
        "UPDATE saga_timers SET claimed_by = $1, claimed_until = {now} + $2, claim_epoch = claim_epoch + 1 \
         WHERE id IN (\
           SELECT id FROM saga_timers WHERE fire_at <= {now} AND (claimed_until IS NULL OR claimed_until < {now}) \
           ORDER BY fire_at LIMIT $3{lock}) \
         RETURNING {COLUMNS}"
    );
    let lease_us = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 4);
    let mut tx = store.begin().await?;
    let timers: Vec<Timer> = on_tx!(tx, c => {
        sqlx::query_as(&sql)
            .bind(owner)
            .bind(lease_us)
            .bind(limit)
            .fetch_all(&mut *c)
            .await?
    });
    tx.commit().await?;
    Ok(timers)
}

/// When the next timer free to claim comes due (unix micros), if any. Claims are compared
/// with the database's clock.
pub async fn next_due(store: &Store) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "SELECT MIN(fire_at) FROM saga_timers WHERE claimed_until IS NULL OR claimed_until < {}",
        dialect::now_micros(store.backend())
    );
    Ok(on_read!(store, p => {
        sqlx::query_scalar::<_, Option<i64>>(&sql).fetch_one(p).await?
    }))
}

/// Removes a fired timer; false when `t`'s claim was lost (re-armed, cancelled or claimed
/// again after the lease ran out), in which case the caller must roll back.
pub async fn finish(tx: &mut Tx, t: &Timer) -> Result<bool, StoreError> {
    let n = on_tx!(tx, c => {
        sqlx::query("DELETE FROM saga_timers WHERE id = $1 AND claim_epoch = $2")
            .bind(t.id)
            .bind(t.claim_epoch)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    refused_if(n == 0, t);
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
             WHERE id = $1 AND claim_epoch = $2",
        )
        .bind(t.id)
        .bind(t.claim_epoch)
        .bind(fire_at)
        .bind(attempts)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    refused_if(n == 0, t);
    Ok(n == 1)
}

fn refused_if(lost: bool, t: &Timer) {
    if lost {
        t.lost.set();
        tracing::info!(kind = %t.kind, request_id = %t.request_id, claim_epoch = t.claim_epoch,
            "saga timer's claim was lost (claimed again, re-armed or cancelled); its completion is refused");
    }
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
    if t.lost.get() {
        ctx.metrics
            .lease_writes_refused
            .with_label_values(&["timer"])
            .inc();
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
        let due = match next_due(&ctx.store).await {
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
        let claimed = match claim(&ctx.store, &owner, lease, BATCH).await {
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
