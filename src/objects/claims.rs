//! Single-use PUT URLs for the local backend's blob endpoint. A signed PUT URL uploads once:
//! the request that wants to write claims the URL (by its signature) in the store before it
//! writes, and marks it used once the upload is stored and reported. A failed upload releases
//! its claim, so the client can try again with the same URL; a claim whose writer vanished
//! (a crash mid-upload) can be taken over after `objects.blob_put_claim_secs`. Rows go once
//! their URL has expired, since the signature check refuses such URLs anyway.

use crate::on_write;
use crate::store::{Store, StoreError, now_micros};

/// The outcome of claiming a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request may write; `writer` identifies its claim.
    Won { writer: String },
    /// An upload with this URL has already been stored.
    Used,
    /// Another request is uploading with this URL right now.
    InProgress,
}

/// Claims the URL with `signature` (for `key`, valid until `url_expires`, unix seconds). A
/// `writing` claim older than `stale_after_micros` is taken over.
pub async fn claim(
    store: &Store,
    signature: &str,
    key: &str,
    url_expires: i64,
    stale_after_micros: i64,
) -> Result<Claim, StoreError> {
    let now = now_micros();
    let writer = uuid::Uuid::new_v4().simple().to_string();
    let won = on_write!(store, p => {
        // Forget URLs that have expired (their signature check fails from now on).
        sqlx::query("DELETE FROM blob_put_claims WHERE url_expires < $1")
            .bind(now / 1_000_000)
            .execute(p)
            .await?;
        sqlx::query(
            "INSERT INTO blob_put_claims (signature, object_key, state, writer, claimed_at, url_expires) \
             VALUES ($1, $2, 'writing', $3, $4, $5) \
             ON CONFLICT (signature) DO UPDATE SET writer = excluded.writer, claimed_at = excluded.claimed_at \
             WHERE blob_put_claims.state = 'writing' AND blob_put_claims.claimed_at < $6",
        )
        .bind(signature)
        .bind(key)
        .bind(&writer)
        .bind(now)
        .bind(url_expires)
        .bind(now - stale_after_micros)
        .execute(p)
        .await?
        .rows_affected()
            == 1
    });
    if won {
        return Ok(Claim::Won { writer });
    }
    let state: Option<String> = on_write!(store, p => {
        sqlx::query_scalar("SELECT state FROM blob_put_claims WHERE signature = $1")
            .bind(signature)
            .fetch_optional(p)
            .await?
    });
    Ok(match state.as_deref() {
        Some("used") => Claim::Used,
        _ => Claim::InProgress,
    })
}

/// Gives the URL back after a failed upload, so it can be used again.
pub async fn release(store: &Store, signature: &str, writer: &str) -> Result<(), StoreError> {
    on_write!(store, p => {
        sqlx::query("DELETE FROM blob_put_claims WHERE signature = $1 AND writer = $2 AND state = 'writing'")
            .bind(signature)
            .bind(writer)
            .execute(p)
            .await?;
    });
    Ok(())
}

/// Marks the URL used after a stored upload; false when the claim was taken over meanwhile.
pub async fn mark_used(store: &Store, signature: &str, writer: &str) -> Result<bool, StoreError> {
    let n = on_write!(store, p => {
        sqlx::query("UPDATE blob_put_claims SET state = 'used' WHERE signature = $1 AND writer = $2")
            .bind(signature)
            .bind(writer)
            .execute(p)
            .await?
            .rows_affected()
    });
    Ok(n == 1)
}
