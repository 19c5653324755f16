//! The epoch of the notifications read model. Ids restart when the table is rebuilt
//! (`replay --rebuild`, a snapshot restore), so an id alone cannot say which rows a reader has
//! seen. The epoch is a counter in the store (`read_model_epochs`, migration 0009) that
//! [`advance`] moves on in every reset's own transaction; every read here returns the epoch its
//! rows belong to, read **in the same statement** (one snapshot on both stores), so a reader
//! never takes rows of a new epoch for the continuation of an old cursor.

use super::{NotificationRow, ROW_COLUMNS, RawRow, VISIBLE_TO};
use crate::store::{Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx};

/// The epoch before the first reset; cursors without an epoch (plain ids) belong to it.
pub const INITIAL: i64 = 1;

/// Rows read together with the epoch they belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub epoch: i64,
    pub rows: Vec<NotificationRow>,
}

/// Moves the epoch on inside `tx` (the reset's transaction); returns the new epoch.
pub(crate) async fn advance(tx: &mut Tx) -> Result<i64, StoreError> {
    Ok(on_tx!(tx, c => {
        sqlx::query_scalar(
            "UPDATE read_model_epochs SET epoch = epoch + 1, changed_at = $1 \
             WHERE model = 'notifications' RETURNING epoch",
        )
        .bind(now_micros())
        .fetch_one(&mut *c)
        .await?
    }))
}

/// The current epoch and the newest id in it (0 when the table is empty), read together.
pub async fn head(store: &Store) -> Result<(i64, i64), StoreError> {
    const SQL: &str = "SELECT e.epoch, COALESCE((SELECT MAX(id) FROM notifications), 0) \
                       FROM read_model_epochs e WHERE e.model = 'notifications'";
    Ok(on_read!(store, p => {
        sqlx::query_as::<_, (i64, i64)>(SQL).fetch_one(p).await?
    }))
}

/// `inner` (a `SELECT {ROW_COLUMNS} FROM notifications … LIMIT …`) joined to the epoch, so the
/// epoch comes back with the rows — and alone, with NULL columns, when there are none.
fn with_epoch(inner: &str) -> String {
    let cols = ROW_COLUMNS
        .split(", ")
        .map(|c| format!("n.{c} AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT e.epoch AS epoch, {cols} FROM read_model_epochs e LEFT JOIN ({inner}) n ON 1 = 1 \
         WHERE e.model = 'notifications' ORDER BY n.id"
    )
}

/// A row of a [`with_epoch`] query: the notification's columns are NULL when there is none.
#[derive(sqlx::FromRow)]
struct EpochRow {
    epoch: i64,
    id: Option<i64>,
    event_id: Option<String>,
    user_id: Option<String>,
    event_type: Option<String>,
    payload: Option<String>,
    visibility: Option<String>,
    recipient_id: Option<String>,
    event_time: Option<i64>,
}

fn page(rows: Vec<EpochRow>) -> Result<Page, StoreError> {
    let Some(epoch) = rows.first().map(|r| r.epoch) else {
        return Err(StoreError::Data(
            "read_model_epochs has no row for notifications (migration 0009)".into(),
        ));
    };
    let rows = rows
        .into_iter()
        .filter_map(|r| {
            Some(
                RawRow {
                    id: r.id?,
                    event_id: r.event_id.unwrap_or_default(),
                    user_id: r.user_id.unwrap_or_default(),
                    event_type: r.event_type.unwrap_or_default(),
                    payload: r.payload.unwrap_or_default(),
                    visibility: r.visibility.unwrap_or_default(),
                    recipient_id: r.recipient_id,
                    event_time: r.event_time.unwrap_or(0),
                }
                .into(),
            )
        })
        .collect();
    Ok(Page { epoch, rows })
}

/// Rows visible to `user` with id > `after`, oldest first, and their epoch.
pub async fn visible_page(
    store: &Store,
    user: &str,
    after: i64,
    limit: i64,
) -> Result<Page, StoreError> {
    let sql = with_epoch(&format!(
        "SELECT {ROW_COLUMNS} FROM notifications WHERE {VISIBLE_TO} AND id > $2 ORDER BY id LIMIT $3"
    ));
    on_read!(store, p => {
        page(sqlx::query_as(&sql).bind(user).bind(after).bind(limit).fetch_all(p).await?)
    })
}

/// Every row (any user) with id > `after`, oldest first, and their epoch: the realtime hub's
/// tail.
pub async fn tail_page(store: &Store, after: i64, limit: i64) -> Result<Page, StoreError> {
    let sql = with_epoch(&format!(
        "SELECT {ROW_COLUMNS} FROM notifications WHERE id > $1 ORDER BY id LIMIT $2"
    ));
    on_read!(store, p => {
        page(sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(p).await?)
    })
}
