//! Which handlers run where: projections and sinks in the `consumers` role, saga supervisors
//! in the `sagas` role, alert notifications in the `alerts` role. Add a handler here to have it
//! run.

use std::sync::Arc;

use super::Handler;
use crate::app::AppContext;

/// Read models and sinks (the `consumers` role).
pub fn projection_handlers(ctx: &AppContext) -> Vec<Arc<dyn Handler>> {
    vec![
        Arc::new(crate::projections::notifications::NotificationsProjection::new(ctx.clone())),
        Arc::new(crate::projections::stats::StatsProjection::new(ctx)),
        Arc::new(crate::projections::counts::CountsProjection::new(ctx)),
        Arc::new(crate::probe::projection::ProbeProjection::new(ctx.clone())),
        // Users' telemetry: samples, rollups and log lines (store or ClickHouse).
        crate::telemetry::store::handler(ctx),
    ]
}

/// Saga supervisors (the `sagas` role).
pub fn saga_handlers(ctx: &AppContext) -> Vec<Arc<dyn Handler>> {
    vec![
        Arc::new(crate::media::upload::UploadSaga::new(ctx.clone())),
        Arc::new(crate::media::download::DownloadSaga::new(ctx.clone())),
        Arc::new(crate::media::delete::DeleteSaga::new(ctx.clone())),
    ]
}

/// Alert notifications (the `alerts` role): transitions into webhook deliveries.
pub fn alert_handlers(ctx: &AppContext) -> Vec<Arc<dyn Handler>> {
    vec![Arc::new(
        crate::alerts::notify::consume::NotifyHandler::new(ctx.clone()),
    )]
}

/// Every consumer group with its topics (for `replay` without `--group`, and lag).
pub fn all_groups(ctx: &AppContext) -> Vec<(String, Vec<String>)> {
    projection_handlers(ctx)
        .into_iter()
        .chain(saga_handlers(ctx))
        .chain(alert_handlers(ctx))
        .map(|h| (h.group().to_string(), h.topics()))
        .collect()
}

/// Whether consumer group `group` reads `topic`: a handler's group, or the ClickHouse sink
/// (`analytics::sink`) when ClickHouse is configured.
pub fn reads(ctx: &AppContext, group: &str, topic: &str) -> bool {
    let handler = all_groups(ctx)
        .into_iter()
        .any(|(g, topics)| g == group && topics.iter().any(|t| t == topic));
    let sink = group == crate::analytics::sink::GROUP
        && ctx.analytics.clickhouse().is_some()
        && crate::projections::counts::counted_topics(ctx)
            .iter()
            .any(|t| t == topic);
    handler || sink
}
