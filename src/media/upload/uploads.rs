//! The upload saga's state, one `media_uploads` row per request: approved → signed →
//! received → confirmed, or rejected / expired / dead_lettered. Transitions are conditional
//! updates (`WHERE state IN (…)`), so two racing steps cannot both move the same saga.

use serde::Serialize;

use crate::store::{Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx, on_write};

/// The saga's states.
pub mod state {
    pub const APPROVED: &str = "approved";
    pub const SIGNED: &str = "signed";
    pub const RECEIVED: &str = "received";
    pub const CONFIRMED: &str = "confirmed";
    pub const REJECTED: &str = "rejected";
    pub const EXPIRED: &str = "expired";
    pub const DEAD_LETTERED: &str = "dead_lettered";

    /// States a saga never leaves.
    pub fn is_final(s: &str) -> bool {
        matches!(s, CONFIRMED | REJECTED | EXPIRED | DEAD_LETTERED)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct Upload {
    pub request_id: String,
    pub user_id: String,
    pub file_name: String,
    pub media_type: String,
    pub file_size: i64,
    pub upload_path: String,
    pub file_path: String,
    pub state: String,
    pub reason: Option<String>,
    pub upload_url: Option<String>,
    pub url_expires_at: Option<i64>,
    pub move_attempts: i64,
    #[serde(skip)]
    pub traceparent: Option<String>,
    #[serde(skip)]
    pub correlation_id: Option<String>,
    pub started_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "request_id, user_id, file_name, media_type, file_size, upload_path, file_path, state, reason, \
     upload_url, url_expires_at, move_attempts, traceparent, correlation_id, started_at, updated_at, finished_at";

pub async fn insert(tx: &mut Tx, u: &Upload) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        sqlx::query(&format!(
            "INSERT INTO media_uploads ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(&u.request_id)
        .bind(&u.user_id)
        .bind(&u.file_name)
        .bind(&u.media_type)
        .bind(u.file_size)
        .bind(&u.upload_path)
        .bind(&u.file_path)
        .bind(&u.state)
        .bind(u.reason.as_deref())
        .bind(u.upload_url.as_deref())
        .bind(u.url_expires_at)
        .bind(u.move_attempts)
        .bind(u.traceparent.as_deref())
        .bind(u.correlation_id.as_deref())
        .bind(u.started_at)
        .bind(u.updated_at)
        .bind(u.finished_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// The saga row, read inside `tx`.
pub async fn get_tx(tx: &mut Tx, request_id: &str) -> Result<Option<Upload>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM media_uploads WHERE request_id = $1");
    Ok(on_tx!(tx, c => {
        sqlx::query_as(&sql).bind(request_id).fetch_optional(&mut *c).await?
    }))
}

pub async fn get(store: &Store, request_id: &str) -> Result<Option<Upload>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM media_uploads WHERE request_id = $1");
    Ok(on_read!(store, p => {
        sqlx::query_as(&sql).bind(request_id).fetch_optional(p).await?
    }))
}

/// The saga whose upload key is `upload_path`.
pub async fn by_upload_path(
    store: &Store,
    upload_path: &str,
) -> Result<Option<Upload>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM media_uploads WHERE upload_path = $1");
    Ok(on_read!(store, p => {
        sqlx::query_as(&sql).bind(upload_path).fetch_optional(p).await?
    }))
}

/// Moves the saga from one of `from` to `to` (with `reason`); false when it was in another
/// state. `from` holds state constants, never input.
pub async fn transition(
    tx: &mut Tx,
    request_id: &str,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
) -> Result<bool, StoreError> {
    let list = from
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let now = now_micros();
    let finished = state::is_final(to).then_some(now);
    let sql = format!(
        "UPDATE media_uploads SET state = $2, reason = COALESCE($3, reason), updated_at = $4, \
         finished_at = COALESCE($5, finished_at) WHERE request_id = $1 AND state IN ({list})"
    );
    let n = on_tx!(tx, c => {
        sqlx::query(&sql)
            .bind(request_id)
            .bind(to)
            .bind(reason)
            .bind(now)
            .bind(finished)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(n == 1)
}

/// approved → signed, recording the URL handed out.
pub async fn set_signed(
    tx: &mut Tx,
    request_id: &str,
    url: &str,
    expires_at_micros: i64,
) -> Result<bool, StoreError> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE media_uploads SET state = 'signed', upload_url = $2, url_expires_at = $3, updated_at = $4 \
             WHERE request_id = $1 AND state = 'approved'",
        )
        .bind(request_id)
        .bind(url)
        .bind(expires_at_micros)
        .bind(now_micros())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

pub async fn set_move_attempts(tx: &mut Tx, request_id: &str, n: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        sqlx::query("UPDATE media_uploads SET move_attempts = $2, updated_at = $3 WHERE request_id = $1")
            .bind(request_id)
            .bind(n)
            .bind(now_micros())
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Signed uploads not HEAD-checked since `cutoff` (oldest first).
pub async fn due_head_checks(
    store: &Store,
    cutoff: i64,
    limit: i64,
) -> Result<Vec<Upload>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM media_uploads WHERE state = 'signed' \
         AND (head_checked_at IS NULL OR head_checked_at <= $1) ORDER BY updated_at LIMIT $2"
    );
    Ok(on_read!(store, p => {
        sqlx::query_as(&sql).bind(cutoff).bind(limit).fetch_all(p).await?
    }))
}

/// Takes the HEAD check of one upload for this round (false: another instance has it).
pub async fn claim_head_check(
    store: &Store,
    request_id: &str,
    cutoff: i64,
) -> Result<bool, StoreError> {
    let n = on_write!(store, p => {
        sqlx::query(
            "UPDATE media_uploads SET head_checked_at = $2 WHERE request_id = $1 AND state = 'signed' \
             AND (head_checked_at IS NULL OR head_checked_at <= $3)",
        )
        .bind(request_id)
        .bind(now_micros())
        .bind(cutoff)
        .execute(p)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}
