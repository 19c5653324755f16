//! The upload saga's move timer: copy the received upload from `uploads/` to `files/` (I/O
//! outside any transaction, safe to repeat), then confirm it in one transaction (saga state,
//! `media_files` row, `upload.confirmed`); a failed attempt is retried with backoff, and after
//! `media.move_max_retries` attempts the upload is dead-lettered and refunded.

use serde_json::json;

use super::uploads::{self, Upload, state};
use super::{SAGA, outgoing};
use crate::app::AppContext;
use crate::media::payloads::{UploadConfirmed, UploadDeadLetter, UploadRejected, UploadRetry};
use crate::media::timers::{self, Timer, kind};
use crate::media::{MediaError, credits, emit, files, topics};
use crate::store::now_micros;

enum Moved {
    Done(u64),
    TooLarge(u64),
    Failed(String),
}

/// The move's I/O (safe to repeat).
async fn move_upload(ctx: &AppContext, u: &Upload, failures_so_far: i64) -> Moved {
    if failures_so_far < i64::from(ctx.config.media.inject_move_failures) {
        return Moved::Failed(
            "injected move failure (media.inject_move_failures, for testing)".into(),
        );
    }
    match ctx.objects.head(&u.upload_path).await {
        Ok(Some(size)) if size > ctx.config.media.max_file_size.max(0) as u64 => {
            return Moved::TooLarge(size);
        }
        Ok(_) => {}
        Err(e) => return Moved::Failed(e.to_string()),
    }
    match ctx.objects.move_object(&u.upload_path, &u.file_path).await {
        Ok(size) => Moved::Done(size),
        Err(e) => Moved::Failed(e.to_string()),
    }
}

/// Timer: move the received upload to `files/` and confirm it; on failure retry with
/// backoff, and dead-letter after `media.move_max_retries` attempts.
pub async fn on_move(ctx: &AppContext, t: &Timer) -> Result<(), MediaError> {
    let u = uploads::get(&ctx.store, &t.request_id).await?;
    let Some(u) = u.filter(|u| u.state == state::RECEIVED) else {
        let mut tx = ctx.store.begin().await?;
        timers::finish(&mut tx, t).await?;
        tx.commit().await?;
        return Ok(());
    };
    let moved = move_upload(ctx, &u, t.attempts).await;
    let mut tx = ctx.store.begin().await?;
    let mut out = outgoing(ctx, &u);
    let m = &ctx.metrics;
    match moved {
        Moved::Done(size) => {
            if !timers::finish(&mut tx, t).await?
                || !uploads::transition(
                    &mut tx,
                    &u.request_id,
                    &[state::RECEIVED],
                    state::CONFIRMED,
                    None,
                )
                .await?
            {
                tx.rollback().await?;
                return Ok(());
            }
            // A PUT of the same URL may still land at the upload key: sweep it after expiry.
            super::sweep::arm(&mut tx, ctx, &u).await?;
            files::insert_active(
                &mut tx,
                &files::MediaFile {
                    file_path: u.file_path.clone(),
                    user_id: u.user_id.clone(),
                    request_id: u.request_id.clone(),
                    file_name: u.file_name.clone(),
                    media_type: u.media_type.clone(),
                    file_size: size as i64,
                    status: "active".into(),
                    created_at: now_micros(),
                    deleted_at: None,
                },
            )
            .await?;
            out.emit(
                topics::UPLOAD_CONFIRMED,
                &u.user_id,
                &UploadConfirmed {
                    version: 1,
                    user_id: u.user_id.clone(),
                    request_id: u.request_id.clone(),
                    file_name: u.file_name.clone(),
                    file_path: u.file_path.clone(),
                    upload_path: u.upload_path.clone(),
                    media_type: u.media_type.clone(),
                    file_size: size as i64,
                },
            )?;
            emit::finished(&mut tx, m, SAGA, "confirmed", u.started_at);
        }
        Moved::TooLarge(size) => {
            if !timers::finish(&mut tx, t).await?
                || !uploads::transition(
                    &mut tx,
                    &u.request_id,
                    &[state::RECEIVED],
                    state::REJECTED,
                    Some("file_too_large"),
                )
                .await?
            {
                tx.rollback().await?;
                return Ok(());
            }
            credits::refund(&mut tx, &u.user_id, &u.request_id, "upload too large").await?;
            super::sweep::arm(&mut tx, ctx, &u).await?;
            timers::schedule(
                &mut tx,
                kind::REMOVE_OBJECT,
                &u.request_id,
                now_micros(),
                &json!({ "key": u.upload_path }),
            )
            .await?;
            timers::wake_after_commit(&mut tx, ctx);
            tracing::info!(request_id = %u.request_id, size, "upload larger than media.max_file_size; refused");
            out.emit(
                topics::UPLOAD_REJECTED,
                &u.user_id,
                &UploadRejected {
                    version: 1,
                    user_id: u.user_id.clone(),
                    request_id: u.request_id.clone(),
                    file_name: u.file_name.clone(),
                    media_type: u.media_type.clone(),
                    file_size: size as i64,
                    reason: "file_too_large".into(),
                },
            )?;
            emit::finished(&mut tx, m, SAGA, "rejected", u.started_at);
        }
        Moved::Failed(reason) => {
            let n = t.attempts + 1;
            let max = i64::from(ctx.config.media.move_max_retries.max(1));
            uploads::set_move_attempts(&mut tx, &u.request_id, n).await?;
            if n >= max {
                if !timers::finish(&mut tx, t).await?
                    || !uploads::transition(
                        &mut tx,
                        &u.request_id,
                        &[state::RECEIVED],
                        state::DEAD_LETTERED,
                        Some(&reason),
                    )
                    .await?
                {
                    tx.rollback().await?;
                    return Ok(());
                }
                credits::refund(&mut tx, &u.user_id, &u.request_id, "upload failed").await?;
                tracing::error!(request_id = %u.request_id, attempts = n, error = %reason, "moving an upload failed for good; dead-lettered");
                out.emit(
                    topics::UPLOAD_DEAD_LETTER,
                    &u.user_id,
                    &UploadDeadLetter {
                        version: 1,
                        user_id: u.user_id.clone(),
                        request_id: u.request_id.clone(),
                        file_path: u.upload_path.clone(),
                        file_name: Some(u.file_name.clone()),
                        retry_count: n as i32,
                        reason,
                    },
                )?;
                emit::finished(&mut tx, m, SAGA, "dead_lettered", u.started_at);
            } else {
                let at = now_micros()
                    + timers::backoff(ctx.config.media.move_backoff_ms, n).as_micros() as i64;
                if !timers::retry_at(&mut tx, t, at, n).await? {
                    tx.rollback().await?;
                    return Ok(());
                }
                tracing::warn!(request_id = %u.request_id, attempts = n, error = %reason, "moving an upload failed; will retry");
                out.emit(
                    topics::UPLOAD_RETRY,
                    &u.user_id,
                    &UploadRetry {
                        version: 1,
                        user_id: u.user_id.clone(),
                        request_id: u.request_id.clone(),
                        file_path: u.upload_path.clone(),
                        retry_count: n as i32,
                        reason,
                    },
                )?;
                emit::step(&mut tx, m, SAGA, "retried");
            }
        }
    }
    out.append(&mut tx, &ctx.outbox).await?;
    tx.commit().await?;
    Ok(())
}
