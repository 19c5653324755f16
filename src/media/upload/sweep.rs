//! The upload sweep: once an upload saga is over (confirmed, rejected or expired) and its PUT
//! URL can no longer be used, whatever sits at its `uploads/` key is removed. This covers what
//! substrate cannot refuse or may not hear of: a presigned S3 URL PUT again after the upload
//! was moved, an upload that lands after the TTL expired the saga and no notification reports
//! it, a blob upload whose report was lost in a crash. The timer fires
//! `media.upload_sweep_grace_secs` after the URL's expiry (an upload that began before the
//! expiry may still be landing) and removes the object with the `remove_object` step's
//! retries. A dead-lettered upload is kept for inspection, so it is not swept.

use serde_json::json;

use super::uploads::Upload;
use crate::app::AppContext;
use crate::media::timers::{self, kind};
use crate::store::{StoreError, Tx, now_micros};

/// Arms the sweep of `u`'s upload key, inside the transaction that ends the saga. Nothing to
/// sweep when no URL was handed out.
pub async fn arm(tx: &mut Tx, ctx: &AppContext, u: &Upload) -> Result<(), StoreError> {
    let Some(url_expires_at) = u.url_expires_at else {
        return Ok(());
    };
    let grace = ctx.config.media.upload_sweep_grace_secs as i64 * 1_000_000;
    let at = url_expires_at.max(now_micros()).saturating_add(grace);
    timers::schedule(
        tx,
        kind::UPLOAD_SWEEP,
        &u.request_id,
        at,
        &json!({ "key": u.upload_path }),
    )
    .await
}
