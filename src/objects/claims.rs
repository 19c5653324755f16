//! Single-use PUT URLs for the local backend's blob endpoint. A signed PUT URL uploads once:
//! the request that wants to write claims the URL (by its signature) in the store before it
//! writes, and marks it used once the upload is stored and reported. A failed upload — also
//! one whose client went away, which cancels the request — gives its claim back ([`Held`]), so
//! the client can try again with the same URL; a claim whose process died mid-upload can be
//! taken over after `objects.blob_put_claim_secs`. Rows go once their URL has expired, since
//! the signature check refuses such URLs anyway.

use crate::on_write;
use crate::store::{Store, StoreError, now_micros};

/// The outcome of claiming a URL.
pub enum Claim {
    /// This request may write.
    Won(Held),
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
        return Ok(Claim::Won(Held {
            store: store.clone(),
            signature: signature.to_string(),
            writer,
            settled: false,
        }));
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

/// A claim this request holds. Dropped without [`Held::mark_used`] (an error, or the request
/// was cancelled because the client went away), it gives the URL back.
pub struct Held {
    store: Store,
    signature: String,
    writer: String,
    settled: bool,
}

impl Held {
    /// Marks the URL used after a stored upload; false when the claim was taken over meanwhile
    /// (a writer slower than `objects.blob_put_claim_secs`).
    pub async fn mark_used(mut self) -> Result<bool, StoreError> {
        self.settled = true;
        let n = on_write!(self.store, p => {
            sqlx::query("UPDATE blob_put_claims SET state = 'used' WHERE signature = $1 AND writer = $2")
                .bind(&self.signature)
                .bind(&self.writer)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }
}

/// Gives the URL back, so it can be used again.
async fn release(store: &Store, signature: &str, writer: &str) -> Result<(), StoreError> {
    on_write!(store, p => {
        sqlx::query("DELETE FROM blob_put_claims WHERE signature = $1 AND writer = $2 AND state = 'writing'")
            .bind(signature)
            .bind(writer)
            .execute(p)
            .await?;
    });
    Ok(())
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Drop cannot wait (and runs when a request is cancelled): release in the background.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let (signature, writer) = (
            std::mem::take(&mut self.signature),
            std::mem::take(&mut self.writer),
        );
        rt.spawn(async move {
            if let Err(e) = release(&store, &signature, &writer).await {
                tracing::warn!(error = %e, "giving a blob URL back failed; it frees up after objects.blob_put_claim_secs");
            }
        });
    }
}
