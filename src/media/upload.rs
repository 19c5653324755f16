//! The upload saga. As a consumer group (`media-upload`): intent → credit check → approved
//! (TTL timer armed) or rejected; approved → presigned PUT → signed; received → move timer.
//! As timers: the move (`uploads/` → `files/`, then confirmed; a failure is retried with
//! backoff up to `media.move_max_retries` attempts, then dead-lettered), the TTL (expired,
//! refund, object removed), and object removal. Each step commits its state change and its
//! events in one transaction; I/O happens before it and is safe to repeat.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::emit::{self, Outgoing};
use super::payloads::{
    UploadApproved, UploadConfirmed, UploadDeadLetter, UploadExpired, UploadIntent, UploadReceived,
    UploadRejected, UploadRetry, UploadSigned,
};
use super::timers::{self, Timer, kind};
use super::uploads::{self, Upload, state};
use super::{MediaError, credits, files, topics, types};
use crate::app::AppContext;
use crate::consumers::{Emitter, Envelope, Handler, HandlerError};
use crate::objects::UrlMethod;
use crate::store::{Tx, now_micros};

pub const GROUP: &str = "media-upload";
const SAGA: &str = "upload";
const SOURCE: &str = "/sagas/media-upload";

pub struct UploadSaga {
    ctx: AppContext,
}

impl UploadSaga {
    pub fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }

    /// Why an intent cannot be served, before credits are looked at (the gateway checks the
    /// same; events may also come from elsewhere).
    fn invalid(&self, i: &UploadIntent) -> Option<&'static str> {
        if types::allowed_media_type(&i.media_type).is_none() {
            Some("invalid_media_type")
        } else if i.file_size < 1 || i.file_size > self.ctx.config.media.max_file_size {
            Some("invalid_file_size")
        } else if types::file_name_problem(&i.file_name).is_some() {
            Some("invalid_file_name")
        } else {
            None
        }
    }

    async fn on_intent(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        let i: UploadIntent = ev.payload_as()?;
        if uploads::get_tx(tx, &i.request_id).await?.is_some() {
            return Ok(());
        }
        let cfg = &self.ctx.config.media;
        let m = &self.ctx.metrics;
        emit::step(tx, m, SAGA, "intent");
        let (charged, reason) = match self.invalid(&i) {
            Some(r) => (None, Some(r)),
            None => match credits::charge(
                tx,
                &i.user_id,
                &i.request_id,
                cfg.starting_credits,
                "upload",
            )
            .await?
            {
                credits::Charge::Charged { balance }
                | credits::Charge::AlreadyCharged { balance } => (Some(balance), None),
                credits::Charge::Insufficient { .. } => (None, Some("insufficient_credits")),
            },
        };
        let now = now_micros();
        let row = Upload {
            request_id: i.request_id.clone(),
            user_id: i.user_id.clone(),
            file_name: i.file_name.clone(),
            media_type: i.media_type.to_ascii_lowercase(),
            file_size: i.file_size,
            upload_path: types::upload_path(&i.user_id, &i.request_id, &i.file_name),
            file_path: types::file_path(&i.user_id, &i.request_id, &i.file_name),
            state: if reason.is_some() {
                state::REJECTED
            } else {
                state::APPROVED
            }
            .to_string(),
            reason: reason.map(str::to_string),
            upload_url: None,
            url_expires_at: None,
            move_attempts: 0,
            traceparent: ev.header("traceparent").map(str::to_string),
            correlation_id: ev.header("correlation_id").map(str::to_string),
            started_at: ev.time,
            updated_at: now,
            finished_at: reason.map(|_| now),
        };
        uploads::insert(tx, &row).await?;
        match reason {
            Some(reason) => {
                out.emit(
                    topics::UPLOAD_REJECTED,
                    &row.user_id,
                    &UploadRejected {
                        version: 1,
                        user_id: row.user_id.clone(),
                        request_id: row.request_id.clone(),
                        file_name: row.file_name.clone(),
                        media_type: row.media_type.clone(),
                        file_size: row.file_size,
                        reason: reason.to_string(),
                    },
                )?;
                emit::finished(tx, m, SAGA, "rejected", row.started_at);
            }
            None => {
                let ttl = Duration::from_secs(cfg.upload_ttl_secs);
                timers::schedule(
                    tx,
                    kind::UPLOAD_TTL,
                    &row.request_id,
                    now + ttl.as_micros() as i64,
                    &json!({}),
                )
                .await?;
                out.emit(
                    topics::UPLOAD_APPROVED,
                    &row.user_id,
                    &UploadApproved {
                        version: 1,
                        user_id: row.user_id.clone(),
                        request_id: row.request_id.clone(),
                        file_name: row.file_name.clone(),
                        file_path: row.upload_path.clone(),
                        media_type: row.media_type.clone(),
                        file_size: row.file_size,
                        credits_remaining: charged,
                    },
                )?;
                emit::step(tx, m, SAGA, "approved");
            }
        }
        Ok(())
    }

    async fn on_approved(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        let a: UploadApproved = ev.payload_as()?;
        let Some(u) = uploads::get_tx(tx, &a.request_id).await? else {
            return Ok(());
        };
        if u.state != state::APPROVED {
            return Ok(());
        }
        let signed = self
            .ctx
            .objects
            .presign(
                UrlMethod::Put,
                &u.upload_path,
                Duration::from_secs(self.ctx.config.media.url_ttl_secs),
                Some(u.file_size as u64),
                Some(&u.media_type),
            )
            .await
            .map_err(MediaError::from)?;
        if !uploads::set_signed(
            tx,
            &u.request_id,
            &signed.url,
            signed.expires_at * 1_000_000,
        )
        .await?
        {
            return Ok(());
        }
        out.emit(
            topics::UPLOAD_SIGNED,
            &u.user_id,
            &UploadSigned {
                version: 1,
                user_id: u.user_id.clone(),
                request_id: u.request_id.clone(),
                file_name: u.file_name.clone(),
                file_path: u.upload_path.clone(),
                media_type: u.media_type.clone(),
                file_size: u.file_size,
                upload_url: signed.url,
                expires_in: signed.expires_in as i64,
                expires_at: signed.expires_at * 1000,
            },
        )?;
        emit::step(tx, &self.ctx.metrics, SAGA, "signed");
        Ok(())
    }

    async fn on_received(&self, ev: &Envelope, tx: &mut Tx) -> Result<(), HandlerError> {
        let r: UploadReceived = ev.payload_as()?;
        let Some(u) = uploads::get_tx(tx, &r.request_id).await? else {
            tracing::warn!(request_id = %r.request_id, "upload received for an unknown request; ignored");
            return Ok(());
        };
        if r.file_path != u.upload_path {
            tracing::warn!(request_id = %r.request_id, path = %r.file_path, "upload received at an unexpected path; ignored");
            return Ok(());
        }
        let now = now_micros();
        if uploads::transition(
            tx,
            &u.request_id,
            &[state::APPROVED, state::SIGNED],
            state::RECEIVED,
            None,
        )
        .await?
        {
            timers::cancel(tx, kind::UPLOAD_TTL, &u.request_id).await?;
            timers::schedule(tx, kind::UPLOAD_MOVE, &u.request_id, now, &json!({})).await?;
            timers::wake_after_commit(tx, &self.ctx);
            emit::step(tx, &self.ctx.metrics, SAGA, "received");
        } else if matches!(
            u.state.as_str(),
            state::EXPIRED | state::CONFIRMED | state::REJECTED
        ) {
            // Arrived after the expiry (and the refund), or uploaded again after the saga
            // ended: it must not stay. (A dead-lettered upload is kept for inspection.)
            timers::schedule(
                tx,
                kind::REMOVE_OBJECT,
                &u.request_id,
                now,
                &json!({ "key": u.upload_path }),
            )
            .await?;
            timers::wake_after_commit(tx, &self.ctx);
        }
        Ok(())
    }
}

#[async_trait]
impl Handler for UploadSaga {
    fn group(&self) -> &str {
        GROUP
    }

    fn topics(&self) -> Vec<String> {
        vec![
            topics::UPLOAD_INTENT.into(),
            topics::UPLOAD_APPROVED.into(),
            topics::UPLOAD_RECEIVED.into(),
        ]
    }

    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        match ev.topic.as_str() {
            topics::UPLOAD_INTENT => self.on_intent(ev, tx, out).await,
            topics::UPLOAD_APPROVED => self.on_approved(ev, tx, out).await,
            topics::UPLOAD_RECEIVED => self.on_received(ev, tx).await,
            _ => Ok(()),
        }
    }
}

fn outgoing<'a>(ctx: &'a AppContext, u: &Upload) -> Outgoing<'a> {
    Outgoing::new(
        &ctx.schemas,
        SOURCE,
        u.traceparent.as_deref(),
        u.correlation_id.as_deref(),
    )
}

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
