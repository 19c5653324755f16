//! The download saga (`media-download`): a download intent for an active file the caller owns
//! gets a presigned GET URL (`download.signed`); anything else — a missing, deleted or another
//! user's file alike — gets `download.rejected` with the same reason, so nothing is revealed.

use std::time::Duration;

use async_trait::async_trait;

use super::payloads::{DownloadSigned, FileIntent, FileRejected};
use super::{MediaError, emit, files, topics};
use crate::app::AppContext;
use crate::consumers::{Emitter, Envelope, Handler, HandlerError};
use crate::objects::UrlMethod;
use crate::store::Tx;

pub const GROUP: &str = "media-download";
const SAGA: &str = "download";

/// The one reason given for any refused download or delete.
pub const NOT_FOUND: &str = "file_not_found";

pub struct DownloadSaga {
    ctx: AppContext,
}

impl DownloadSaga {
    pub fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }
}

#[async_trait]
impl Handler for DownloadSaga {
    fn group(&self) -> &str {
        GROUP
    }

    fn topics(&self) -> Vec<String> {
        vec![topics::DOWNLOAD_INTENT.into()]
    }

    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        let i: FileIntent = ev.payload_as()?;
        let m = &self.ctx.metrics;
        emit::step(tx, m, SAGA, "intent");
        match files::active_owned(tx, &i.user_id, &i.file_path).await? {
            Some(f) => {
                let signed = self
                    .ctx
                    .objects
                    .presign(
                        UrlMethod::Get,
                        &f.file_path,
                        Duration::from_secs(self.ctx.config.media.url_ttl_secs),
                        None,
                        Some(&f.media_type),
                    )
                    .await
                    .map_err(MediaError::from)?;
                out.emit(
                    topics::DOWNLOAD_SIGNED,
                    &i.user_id,
                    &DownloadSigned {
                        version: 1,
                        user_id: i.user_id.clone(),
                        request_id: i.request_id.clone(),
                        file_path: f.file_path,
                        download_url: signed.url,
                        expires_in: signed.expires_in as i64,
                        expires_at: signed.expires_at * 1000,
                    },
                )?;
                emit::finished(tx, m, SAGA, "signed", ev.time);
            }
            None => {
                out.emit(
                    topics::DOWNLOAD_REJECTED,
                    &i.user_id,
                    &FileRejected {
                        version: 1,
                        user_id: i.user_id.clone(),
                        request_id: i.request_id.clone(),
                        file_path: i.file_path.clone(),
                        reason: NOT_FOUND.into(),
                    },
                )?;
                emit::finished(tx, m, SAGA, "rejected", ev.time);
            }
        }
        Ok(())
    }
}
