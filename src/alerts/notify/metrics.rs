//! The notifier's metrics, registered in the process's registry (`/metrics`) when the alerts
//! role starts: notifications by target and outcome, deliveries pending, dead letters. The
//! `target` label is a target's name (bounded by the targets operators define).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// Outcomes of one attempt (`outcome` label).
pub const DELIVERED: &str = "delivered";
pub const RETRIED: &str = "retried";
pub const DEAD: &str = "dead";
/// The completion was refused: the claim had passed to another sender.
pub const CLAIM_LOST: &str = "claim_lost";

pub struct NotifyMetrics {
    pub notifications: IntCounterVec,
    pub pending: IntGauge,
    pub dead: IntGauge,
}

impl NotifyMetrics {
    /// The metrics, registered in `registry` (a registry that has them already keeps its own;
    /// these then count unexported, which only happens when the role runs twice in a process).
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            notifications: IntCounterVec::new(
                Opts::new(
                    "alert_notifications_total",
                    "Webhook attempts of alert notifications by target and outcome (delivered, retried, dead, claim_lost).",
                ),
                &["target", "outcome"],
            )?,
            pending: IntGauge::new(
                "alert_deliveries_pending",
                "Alert deliveries not yet delivered nor dead-lettered (all orgs).",
            )?,
            dead: IntGauge::new(
                "alert_deliveries_dead",
                "Dead-lettered alert deliveries (all orgs); redrive them through the API.",
            )?,
        };
        for c in [
            Box::new(m.notifications.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.pending.clone()),
            Box::new(m.dead.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::warn!(error = %e, "alert notification metrics not registered");
            }
        }
        Ok(m)
    }

    pub fn count(&self, target: &str, outcome: &str) {
        self.notifications
            .with_label_values(&[target, outcome])
            .inc();
    }
}
