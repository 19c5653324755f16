//! The `alert-notifications` consumer group: reads `internal.alerts.transitions` on the
//! consumer runtime (inbox = each event applied once) and turns each transition that is
//! notified (`alerts.notify.notify_on`) into one durable delivery row per target of the rule,
//! in the handler's transaction. A target the org does not have is dead-lettered at once with
//! reason `unknown_target`. The sender (`sender.rs`) takes it from there.

use async_trait::async_trait;

use super::{deliveries, targets};
use crate::alerts::event::{TOPIC, Transition};
use crate::app::AppContext;
use crate::consumers::{Emitter, Envelope, Handler, HandlerError};
use crate::store::Tx;

/// The consumer group.
pub const GROUP: &str = "alert-notifications";

pub struct NotifyHandler {
    ctx: AppContext,
}

impl NotifyHandler {
    pub fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }
}

#[async_trait]
impl Handler for NotifyHandler {
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
        let t: Transition = ev.payload_as()?;
        let cfg = &self.ctx.config.alerts.notify;
        if !cfg.notify_on.contains(&t.to) {
            return Ok(());
        }
        let mut fresh = false;
        for name in &t.targets {
            // Read outside `tx` (the read pool): the target's existence is not part of what
            // this transaction writes.
            let known = targets::resolve(&self.ctx, &t.org, name).await?.is_some();
            let reason = (!known).then_some(deliveries::UNKNOWN_TARGET);
            fresh |= deliveries::insert(tx, &t, name, reason).await?;
        }
        if fresh {
            tx.after_commit(super::wake);
        }
        Ok(())
    }
}
