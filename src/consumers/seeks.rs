//! Replay requests. `substrate replay` (or the admin API) records where a consumer group
//! should continue; the group's running consumer applies the request between batches (so
//! offsets are never moved under a member's feet) and marks it applied. A request made while
//! the group is not running is applied when it next starts.

use serde::Serialize;

use crate::log::SeekTo;
use crate::store::{Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SeekRequest {
    pub id: i64,
    pub group_name: String,
    pub topic: String,
    pub mode: String,
    pub position: i64,
    pub rebuild: bool,
    pub requested_at: i64,
    pub applied_at: Option<i64>,
}

impl SeekRequest {
    pub fn target(&self) -> SeekTo {
        match self.mode.as_str() {
            "offset" => SeekTo::Offset(self.position),
            "time" => SeekTo::Time(self.position),
            _ => SeekTo::Beginning,
        }
    }
}

const COLS: &str = "id, group_name, topic, mode, position, rebuild, requested_at, applied_at";

pub async fn request(
    store: &Store,
    group: &str,
    topic: &str,
    to: SeekTo,
    rebuild: bool,
) -> Result<i64, StoreError> {
    let (mode, pos) = match to {
        SeekTo::Beginning => ("beginning", 0),
        SeekTo::Offset(n) => ("offset", n),
        SeekTo::Time(t) => ("time", t),
    };
    let mut tx = store.begin().await?;
    let id: i64 = on_tx!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO consumer_seeks (group_name, topic, mode, position, rebuild, requested_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(group)
        .bind(topic)
        .bind(mode)
        .bind(pos)
        .bind(rebuild)
        .bind(now_micros())
        .fetch_one(&mut *c)
        .await?
    });
    tx.commit().await?;
    Ok(id)
}

/// Requests of `group` newer than `after`, plus any never applied.
pub async fn due(store: &Store, group: &str, after: i64) -> Result<Vec<SeekRequest>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM consumer_seeks WHERE group_name = $1 AND (id > $2 OR applied_at IS NULL) ORDER BY id"
    );
    let rows = on_read!(store, p => {
        sqlx::query_as::<_, SeekRequest>(&sql).bind(group).bind(after).fetch_all(p).await?
    });
    Ok(rows)
}

pub async fn mark_applied(tx: &mut Tx, id: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        sqlx::query("UPDATE consumer_seeks SET applied_at = $1 WHERE id = $2 AND applied_at IS NULL")
            .bind(now_micros())
            .bind(id)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

pub async fn get(store: &Store, id: i64) -> Result<Option<SeekRequest>, StoreError> {
    let sql = format!("SELECT {COLS} FROM consumer_seeks WHERE id = $1");
    let row = on_read!(store, p => {
        sqlx::query_as::<_, SeekRequest>(&sql).bind(id).fetch_optional(p).await?
    });
    Ok(row)
}

/// Whether request `id` has been applied (read now, not from an earlier listing).
pub async fn is_applied(store: &Store, id: i64) -> Result<bool, StoreError> {
    Ok(get(store, id)
        .await?
        .is_some_and(|r| r.applied_at.is_some()))
}

/// The newest request id of `group` (0 when none).
pub async fn max_id(store: &Store, group: &str) -> Result<i64, StoreError> {
    let id: Option<i64> = on_read!(store, p => {
        sqlx::query_scalar("SELECT MAX(id) FROM consumer_seeks WHERE group_name = $1")
            .bind(group)
            .fetch_one(p)
            .await?
    });
    Ok(id.unwrap_or(0))
}
