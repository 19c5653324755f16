//! The upload saga as a consumer group (`media-upload`): intent → credit check → approved
//! (TTL timer armed) or rejected; approved → presigned PUT → signed; received → move timer.
//! Its state is `uploads.rs` (the `media_uploads` rows); its timer steps are `moving.rs` (the move) and `expiry.rs` (TTL,
//! object removal); `detect.rs` and `webhook.rs` notice arrived uploads. Each step commits its
//! state change and its events in one transaction.

pub mod detect;
pub mod expiry;
pub mod moving;
pub mod sweep;
pub mod uploads;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use self::uploads::{Upload, state};
use super::emit::{self, Outgoing};
use super::payloads::{UploadApproved, UploadIntent, UploadReceived, UploadRejected, UploadSigned};
use super::timers::{self, kind};
use super::{MediaError, credits, topics, types};
use crate::app::AppContext;
use crate::consumers::{Emitter, Envelope, Handler, HandlerError};
use crate::objects::UrlMethod;
use crate::store::{Tx, now_micros};

pub const GROUP: &str = "media-upload";
pub(super) const SAGA: &str = "upload";
const SOURCE: &str = "/sagas/media-upload";

pub struct UploadSaga {
    ctx: AppContext,
}

impl UploadSaga {
    pub fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }

    /// Why an intent cannot be served, before credits are looked at: the topic's rules
    /// (`schema::rules`), the very code the gateway checked it with (events may also come
    /// from elsewhere).
    fn invalid(&self, ev: &Envelope) -> Option<&'static str> {
        self.ctx
            .schemas
            .rules()
            .check(&ev.topic, &ev.payload)
            .err()
            .map(|v| v.code)
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
        let (charged, reason) = match self.invalid(ev) {
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

/// Events of a timer step of this saga, continuing the intent's trace.
pub(super) fn outgoing<'a>(ctx: &'a AppContext, u: &Upload) -> Outgoing<'a> {
    Outgoing::new(
        &ctx.schemas,
        SOURCE,
        u.traceparent.as_deref(),
        u.correlation_id.as_deref(),
    )
}
