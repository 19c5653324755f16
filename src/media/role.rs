//! The `sagas` role: the saga supervisors as consumer groups (every handler registered in
//! `consumers::registry::saga_handlers`), the durable timer loop, and the HEAD-check fallback
//! for uploads. Any number of instances may run; they share the groups and the timers.

use tokio_util::sync::CancellationToken;

use crate::app::AppContext;

pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handlers = crate::consumers::saga_handlers(&ctx);
    let shutdown = shutdown.child_token();
    let mut set = tokio::task::JoinSet::new();
    set.spawn(crate::consumers::runtime::run_handlers(
        ctx.clone(),
        handlers,
        shutdown.clone(),
    ));
    set.spawn(super::timers::run(ctx.clone(), shutdown.clone()));
    set.spawn(super::upload::detect::run_head_checks(
        ctx.clone(),
        shutdown.clone(),
    ));
    // One part stopping (other than at shutdown) stops the role, and the process with it.
    let first = set.join_next().await;
    shutdown.cancel();
    while set.join_next().await.is_some() {}
    match first {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(anyhow::anyhow!("sagas task panicked: {e}")),
        None => Ok(()),
    }
}
