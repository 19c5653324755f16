//! Delivery of alert transitions to webhook targets (docs/alerts-notifications.md).
//!
//! - `consume.rs`: the `alert-notifications` group on the consumer runtime turns each notified
//!   transition into durable delivery rows, one per target, in the handler's transaction;
//! - `sender.rs`: claims due work per target and POSTs it, signed (Standard Webhooks), rate
//!   limited, retried with backoff, dead-lettered; `deliveries.rs` holds that state and forms
//!   the grouped notifications, `payload.rs` their JSON body;
//! - `targets.rs`: targets from the configuration and the admin API (`api.rs`), validated;
//! - `metrics.rs`: what the role exports about it.

pub mod api;
pub mod config;
pub mod consume;
pub mod deliveries;
pub mod metrics;
pub mod payload;
pub mod sender;
pub mod targets;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

pub use config::{NotifyConfig, TargetConfig};

use crate::app::AppContext;
use crate::consumers::runtime::{self, ConsumerError};
use crate::store::StoreError;

/// Wakes this process's senders when there is new work (deliveries committed, a redrive);
/// other processes find it on their next poll (`alerts.notify.poll_interval_ms`).
static WAKE: Notify = Notify::const_new();

/// Wakes the senders of this process.
pub fn wake() {
    WAKE.notify_waiters();
}

/// Runs the notification side of the alerts role until `shutdown`: the `alert-notifications`
/// consumer group and the sender. A configured target that is not valid stops it at start.
pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    targets::from_config(&ctx.config.alerts.notify)
        .map_err(|e| anyhow::anyhow!("invalid alerts.notify configuration: {e}"))?;
    let metrics = metrics::NotifyMetrics::new(&ctx.metrics.registry)?;
    let group_ctx = ctx.clone();
    let group_shutdown = shutdown.clone();
    // The consumer runtime's own group loop, for the role's one group.
    let consume = async move {
        let Some(handler) = crate::consumers::registry::alert_handlers(&group_ctx).pop() else {
            return Ok(());
        };
        match runtime::run_group(group_ctx, handler, group_shutdown).await {
            Ok(()) | Err(ConsumerError::Shutdown) => Ok(()),
            Err(e) => Err(anyhow::anyhow!(
                "consumer group {} failed: {e}",
                consume::GROUP
            )),
        }
    };
    let send = sender::run(ctx, metrics, shutdown);
    tokio::try_join!(consume, send).map(|_| ())
}

/// The notification API (targets, deliveries).
pub fn router() -> OpenApiRouter<AppContext> {
    api::router()
}

/// Whether `org` can name target `name` in a rule: its own (admin API) or a configured one.
/// For rule validation at save time.
pub async fn target_exists(ctx: &AppContext, org: &str, name: &str) -> Result<bool, StoreError> {
    Ok(targets::resolve(ctx, org, name).await?.is_some())
}
