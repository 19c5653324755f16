//! The delete saga (`media-delete`): for an active file the caller owns, remove the object
//! first, then soft-delete the row (`status = 'deleted'`) and emit `delete.events`; otherwise
//! `delete.rejected` with the same reason as for a file that does not exist. Both steps are
//! idempotent (a missing object counts as removed; only an active row is soft-deleted), so a
//! failure is a `Retry` for the consumer runtime: retried with backoff, then dead-lettered
//! (`internal.media.delete.intent.dlq`), and a redrive finishes the job.

use async_trait::async_trait;

use super::download::NOT_FOUND;
use super::payloads::{FileDeleted, FileIntent, FileRejected};
use super::{emit, files, topics};
use crate::app::AppContext;
use crate::consumers::{Emitter, Envelope, Handler, HandlerError};
use crate::store::Tx;

pub const GROUP: &str = "media-delete";
const SAGA: &str = "delete";

pub struct DeleteSaga {
    ctx: AppContext,
}

impl DeleteSaga {
    pub fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }
}

#[async_trait]
impl Handler for DeleteSaga {
    fn group(&self) -> &str {
        GROUP
    }

    fn topics(&self) -> Vec<String> {
        vec![topics::DELETE_INTENT.into()]
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
        let Some(f) = files::active_owned(tx, &i.user_id, &i.file_path).await? else {
            out.emit(
                topics::DELETE_REJECTED,
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
            return Ok(());
        };
        // 1. The object (a failure leaves the row active, so the user can still see the file).
        self.ctx
            .objects
            .delete(&f.file_path)
            .await
            .map_err(|e| HandlerError::Retry(format!("removing {}: {e}", f.file_path)))?;
        emit::step(tx, m, SAGA, "object_removed");
        // 2. The row.
        files::soft_delete(tx, &i.user_id, &f.file_path).await?;
        out.emit(
            topics::DELETE_EVENTS,
            &i.user_id,
            &FileDeleted {
                version: 1,
                user_id: i.user_id.clone(),
                request_id: i.request_id.clone(),
                file_path: f.file_path,
            },
        )?;
        emit::finished(tx, m, SAGA, "deleted", ev.time);
        Ok(())
    }
}
