//! The upload saga's expiry timers: the TTL (no upload arrived in time → expired, the credit
//! refunded once, the object removed) and the removal of objects that must not stay. Each
//! fires in its own transaction that applies the state change and appends the events.

use serde_json::json;

use super::uploads::{self, state};
use super::{SAGA, outgoing};
use crate::app::AppContext;
use crate::media::payloads::UploadExpired;
use crate::media::timers::{self, Timer, kind};
use crate::media::{MediaError, credits, emit, topics};
use crate::store::now_micros;

/// Timer: no upload arrived in time. Expire, refund once, and have the object removed.
pub async fn on_ttl(ctx: &AppContext, t: &Timer) -> Result<(), MediaError> {
    let mut tx = ctx.store.begin().await?;
    if !timers::finish(&mut tx, t).await? {
        tx.rollback().await?;
        return Ok(());
    }
    let u = uploads::get_tx(&mut tx, &t.request_id).await?;
    if let Some(u) = u {
        let reason = format!(
            "no upload arrived within {}s",
            ctx.config.media.upload_ttl_secs
        );
        if uploads::transition(
            &mut tx,
            &u.request_id,
            &[state::APPROVED, state::SIGNED],
            state::EXPIRED,
            Some(&reason),
        )
        .await?
        {
            credits::refund(&mut tx, &u.user_id, &u.request_id, "upload expired").await?;
            timers::schedule(
                &mut tx,
                kind::REMOVE_OBJECT,
                &u.request_id,
                now_micros(),
                &json!({ "key": u.upload_path }),
            )
            .await?;
            super::sweep::arm(&mut tx, ctx, &u).await?;
            timers::wake_after_commit(&mut tx, ctx);
            let mut out = outgoing(ctx, &u);
            out.emit(
                topics::UPLOAD_EXPIRED,
                &u.user_id,
                &UploadExpired {
                    version: 1,
                    user_id: u.user_id.clone(),
                    request_id: u.request_id.clone(),
                    file_path: u.upload_path.clone(),
                    file_name: Some(u.file_name.clone()),
                    reason,
                },
            )?;
            out.append(&mut tx, &ctx.outbox).await?;
            emit::finished(&mut tx, &ctx.metrics, SAGA, "expired", u.started_at);
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Timer: remove an object that must not stay; retried with backoff (the bucket's lifecycle
/// rule on `uploads/` is the backstop if the store stays unreachable).
pub async fn on_remove(ctx: &AppContext, t: &Timer) -> Result<(), MediaError> {
    const MAX_ATTEMPTS: i64 = 10;
    let key = t.payload()["key"].as_str().map(str::to_string);
    let result = match &key {
        Some(k) => ctx.objects.delete(k).await,
        None => Ok(()),
    };
    let mut tx = ctx.store.begin().await?;
    match result {
        Ok(()) => {
            timers::finish(&mut tx, t).await?;
        }
        Err(e) => {
            let n = t.attempts + 1;
            if n >= MAX_ATTEMPTS {
                tracing::error!(key = ?key, error = %e, "removing an object failed for good; the bucket lifecycle rule must clean it up");
                timers::finish(&mut tx, t).await?;
            } else {
                tracing::warn!(key = ?key, error = %e, "removing an object failed; will retry");
                let at = now_micros() + timers::backoff(1000, n).as_micros() as i64;
                timers::retry_at(&mut tx, t, at, n).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
