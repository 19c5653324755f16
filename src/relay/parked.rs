//! The relay's dead letters: outbox rows it cannot send (`relay_parked`). A row is parked when
//! the producer can never take it (larger than `log.max_message_bytes`) or when the broker has
//! refused it, sent on its own, `log.relay_park_after` times. The row stays in the outbox, and
//! every later row of its key (topic + event key) waits behind it — the key stops, the rest of
//! its lane flows on — until an operator redrives it (the relay tries again, from the parked
//! row, in order) or discards it (marked done without being sent; the key goes on without it).
//! Shared by the relay, the CLI (`substrate relay parked …`) and the admin HTTP API.

use serde::Serialize;

use crate::store::lease::Fence;
use crate::store::{Store, StoreError, now_micros};
use crate::{on_read, on_tx};

/// SQL condition on `outbox` rows: the row's key is not held by an open parked row.
pub const NOT_HELD: &str = "NOT EXISTS (SELECT 1 FROM relay_parked rp WHERE rp.resolved_at IS NULL AND rp.topic = outbox.topic AND rp.event_key = outbox.event_key)";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ParkedRow {
    pub id: i64,
    pub outbox_id: i64,
    pub event_id: String,
    pub topic: String,
    pub event_key: String,
    pub error: String,
    pub attempts: i64,
    pub parked_at: i64,
    pub resolved_at: Option<i64>,
    /// `redriven` or `discarded` once resolved.
    pub resolution: Option<String>,
    /// Rows of the same key waiting behind this one (open entries only).
    #[sqlx(default)]
    pub held_rows: i64,
}

const SELECT: &str = "SELECT id, outbox_id, event_id, topic, event_key, error, attempts, parked_at, resolved_at, resolution, \
     (SELECT COUNT(*) FROM outbox o WHERE o.published_at IS NULL AND o.topic = relay_parked.topic AND o.event_key = relay_parked.event_key AND o.id > relay_parked.outbox_id AND relay_parked.resolved_at IS NULL) AS held_rows \
     FROM relay_parked";

/// Parks outbox row `outbox_id` (if it is still pending and its key is not parked already),
/// under `fence`, the lease of the row's lane (a relay that lost the lane parks nothing).
/// Returns whether a row was parked.
pub async fn park(
    store: &Store,
    fence: &Fence,
    outbox_id: i64,
    error: &str,
    attempts: u32,
) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    fence.check(&mut tx).await?;
    let n = on_tx!(tx, p => {
        sqlx::query(
            "INSERT INTO relay_parked (outbox_id, event_id, topic, event_key, error, attempts, parked_at) \
             SELECT id, event_id, topic, event_key, $1, $2, $3 FROM outbox WHERE id = $4 AND published_at IS NULL \
             ON CONFLICT DO NOTHING",
        )
        .bind(error)
        .bind(i64::from(attempts))
        .bind(now_micros())
        .bind(outbox_id)
        .execute(&mut *p)
        .await?
        .rows_affected()
    });
    tx.commit().await?;
    Ok(n > 0)
}

/// Parked rows, oldest first: the open ones, or all with `all`.
pub async fn list(store: &Store, all: bool) -> Result<Vec<ParkedRow>, StoreError> {
    let sql = if all {
        format!("{SELECT} ORDER BY id")
    } else {
        format!("{SELECT} WHERE resolved_at IS NULL ORDER BY id")
    };
    let rows = on_read!(store, p => {
        sqlx::query_as::<_, ParkedRow>(&sql).fetch_all(p).await?
    });
    Ok(rows)
}

/// Open parked rows (the `substrate_relay_parked_rows` gauge).
pub async fn open_count(store: &Store) -> Result<i64, StoreError> {
    let n = on_read!(store, p => {
        sqlx::query_scalar("SELECT COUNT(*) FROM relay_parked WHERE resolved_at IS NULL")
            .fetch_one(p)
            .await?
    });
    Ok(n)
}

/// Which open parked rows an operator action applies to.
#[derive(Debug, Clone)]
pub enum Which {
    Ids(Vec<i64>),
    All,
}

fn id_condition(which: &Which) -> String {
    match which {
        Which::All => String::new(),
        Which::Ids(ids) => {
            let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            format!(
                " AND id IN ({})",
                if list.is_empty() { "NULL" } else { &list }
            )
        }
    }
}

/// Lets the relay try the parked rows again (their keys flow from them on, in order).
/// Returns the entries resolved.
pub async fn redrive(store: &Store, which: &Which) -> Result<Vec<i64>, StoreError> {
    resolve(store, which, "redriven").await
}

/// Gives up on the parked rows: each is marked done without being sent, and its key goes on
/// with the next row. Returns the entries resolved.
pub async fn discard(store: &Store, which: &Which) -> Result<Vec<i64>, StoreError> {
    resolve(store, which, "discarded").await
}

async fn resolve(store: &Store, which: &Which, how: &str) -> Result<Vec<i64>, StoreError> {
    let now = now_micros();
    let sql = format!(
        "UPDATE relay_parked SET resolved_at = $1, resolution = $2 WHERE resolved_at IS NULL{} RETURNING id, outbox_id",
        id_condition(which)
    );
    let mut tx = store.begin().await?;
    let done: Vec<(i64, i64)> = on_tx!(tx, c => {
        sqlx::query_as(&sql).bind(now).bind(how).fetch_all(&mut *c).await?
    });
    if how == "discarded" {
        for (_, outbox_id) in &done {
            on_tx!(tx, c => {
                sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = $2 AND published_at IS NULL")
                    .bind(now)
                    .bind(*outbox_id)
                    .execute(&mut *c)
                    .await?;
            });
        }
    }
    tx.commit().await?;
    Ok(done.into_iter().map(|(id, _)| id).collect())
}
