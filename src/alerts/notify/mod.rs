//! Delivery of alert transitions to webhook targets.
//! (Skeleton: filled in by the notification work.)

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppContext;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyConfig {}

pub async fn run(_ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
}
