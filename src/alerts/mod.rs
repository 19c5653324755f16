//! The `alerts` role (`--roles=alerts`): alert rules over the telemetry the platform stores,
//! evaluated on an interval, each alert moving inactive → pending → firing → resolved with
//! its state durable in the store, and every transition written to history and emitted as an
//! `internal.alerts.transitions` event (`event.rs`) in the same transaction. Those events are
//! delivered to the rules' webhook targets by the `alert-notifications` group (`notify/`).
//!
//! - `rules/`: the rule model, validation, the admin API (`/api/v1/alerts/rules`), the rules
//!   file, evaluation, state and history;
//! - `notify/`: targets, signed webhook delivery with retries, dead letters, per-target rate
//!   limits and grouping.

pub mod config;
pub mod event;
pub mod notify;
pub mod rules;

use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

pub use config::AlertsConfig;

use crate::app::AppContext;

/// Runs the role until `shutdown`: the evaluator and the notifier side by side.
pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let eval = rules::run(ctx.clone(), shutdown.clone());
    let notify = notify::run(ctx, shutdown);
    tokio::try_join!(eval, notify).map(|_| ())
}

/// The alerts API (rules, history, targets), served by the gateway.
pub fn router() -> OpenApiRouter<AppContext> {
    rules::router().merge(notify::router())
}
