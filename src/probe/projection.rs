//! The probe's consumer group: it applies each `internal.platform.probe` event by stamping
//! the run's `projected_at`, in the same transaction as its inbox record, and wakes a probe
//! waiting in this process (others poll).

use async_trait::async_trait;

use crate::app::AppContext;
use crate::consumers::{Emitter, Envelope, Handler, HandlerError};
use crate::on_tx;
use crate::store::{Tx, now_micros};

pub const GROUP: &str = "platform-probe";
pub const TOPIC: &str = "internal.platform.probe";

pub struct ProbeProjection {
    ctx: AppContext,
}

impl ProbeProjection {
    pub fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }
}

#[async_trait]
impl Handler for ProbeProjection {
    fn group(&self) -> &str {
        GROUP
    }

    fn topics(&self) -> Vec<String> {
        vec![TOPIC.to_string()]
    }

    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        _out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        let probe_id = ev
            .str_field("probe_id")
            .ok_or_else(|| HandlerError::Reject("probe event without probe_id".into()))?;
        on_tx!(tx, c => {
            sqlx::query("UPDATE probe_runs SET projected_at = $1 WHERE probe_id = $2 AND projected_at IS NULL")
                .bind(now_micros())
                .bind(probe_id)
                .execute(&mut *c)
                .await
                .map_err(crate::store::StoreError::from)?;
        });
        let hub = self.ctx.probe.clone();
        tx.after_commit(move || hub.projected());
        Ok(())
    }
}
