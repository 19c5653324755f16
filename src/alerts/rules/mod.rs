//! Alert rules: model, validation, API, rules file, evaluation, state and history.
//! (Skeleton: filled in by the rules work.)

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppContext;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RulesConfig {}

pub async fn run(_ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
}
