//! The files read model, `media_files`: a row per confirmed upload, `status` `active` or
//! (soft-deleted) `deleted`. Users see and act on their own active files only.

use serde::Serialize;

use crate::store::{Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx};

#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct MediaFile {
    pub file_path: String,
    #[serde(skip)]
    pub user_id: String,
    pub request_id: String,
    pub file_name: String,
    pub media_type: String,
    pub file_size: i64,
    pub status: String,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

const COLUMNS: &str = "file_path, user_id, request_id, file_name, media_type, file_size, status, created_at, deleted_at";

/// Records a confirmed file (once per request).
pub async fn insert_active(tx: &mut Tx, f: &MediaFile) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        sqlx::query(&format!(
            "INSERT INTO media_files ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, NULL) \
             ON CONFLICT (file_path) DO NOTHING"
        ))
        .bind(&f.file_path)
        .bind(&f.user_id)
        .bind(&f.request_id)
        .bind(&f.file_name)
        .bind(&f.media_type)
        .bind(f.file_size)
        .bind(f.created_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// `user`'s active file at `path`, read inside `tx` (None for a missing, deleted or foreign
/// file alike).
pub async fn active_owned(
    tx: &mut Tx,
    user: &str,
    path: &str,
) -> Result<Option<MediaFile>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM media_files WHERE file_path = $1 AND user_id = $2 AND status = 'active'"
    );
    Ok(on_tx!(tx, c => {
        sqlx::query_as(&sql).bind(path).bind(user).fetch_optional(&mut *c).await?
    }))
}

/// active → deleted; false when it was not active (already deleted).
pub async fn soft_delete(tx: &mut Tx, user: &str, path: &str) -> Result<bool, StoreError> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE media_files SET status = 'deleted', deleted_at = $3 \
             WHERE file_path = $1 AND user_id = $2 AND status = 'active'",
        )
        .bind(path)
        .bind(user)
        .bind(now_micros())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// `user`'s active files, newest first, created before `before` (unix micros) if given.
pub async fn list_active(
    store: &Store,
    user: &str,
    limit: i64,
    before: Option<i64>,
) -> Result<Vec<MediaFile>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM media_files WHERE user_id = $1 AND status = 'active' AND created_at < $2 \
         ORDER BY created_at DESC, file_path LIMIT $3"
    );
    Ok(on_read!(store, p => {
        sqlx::query_as(&sql)
            .bind(user)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(p)
            .await?
    }))
}

/// Any file row at `path`, whatever its owner or status (tests, operators).
pub async fn get(store: &Store, path: &str) -> Result<Option<MediaFile>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM media_files WHERE file_path = $1");
    Ok(on_read!(store, p => {
        sqlx::query_as(&sql).bind(path).fetch_optional(p).await?
    }))
}
