//! The relay role. With Kafka it moves outbox rows to the broker: it leases key-hash lanes
//! (`lanes`), sends each lane's pending rows in id order and marks them once acknowledged
//! (`publish`), woken at once by appends in this process (and by NOTIFY on PostgreSQL), with a
//! poll fallback. A broker outage only grows the outbox; the relay drains it when the broker is
//! back. With the embedded log the outbox already is the log, so the relay only applies
//! retention (`retention`).

pub mod lanes;
pub mod publish;
pub mod retention;

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer, PurgeConfig};
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::log::kafka::client;

pub use retention::enforce_retention;

const RETENTION_EVERY: Duration = Duration::from_secs(60);
const TOPICS_RETRY: Duration = Duration::from_secs(5);
const FAILURE_BACKOFF: Duration = Duration::from_millis(500);

pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    if ctx.config.is_embedded_log() {
        return retention::run(ctx, shutdown).await;
    }
    let cfg = &ctx.config.log;
    let producer: FutureProducer = client::producer(cfg)?.create()?;
    let mut lanes = lanes::Lanes::new(
        ctx.store.clone(),
        cfg.relay_lanes,
        Duration::from_millis(cfg.relay_lease_ttl_ms),
    );
    let mut wake = ctx.outbox.signal.subscribe();
    let poll = Duration::from_millis(cfg.poll_interval_ms.max(1));
    let mut next_refresh = Instant::now();
    let mut next_retention = Instant::now() + RETENTION_EVERY;
    let mut topics_ready = !cfg.create_topics;
    let mut next_topics = Instant::now();
    tracing::info!(lanes = cfg.relay_lanes, "relay started (kafka)");
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        if now >= next_refresh {
            next_refresh = now + lanes.renew_every();
            if let Err(e) = lanes.refresh().await {
                tracing::warn!(error = %e, "renewing relay lanes failed; pausing");
                lanes.drop_local();
            }
            ctx.metrics.relay_lanes_held.set(lanes.held().len() as i64);
        }
        if !topics_ready && now >= next_topics {
            match crate::log::kafka::topics::ensure(&ctx).await {
                Ok(()) => topics_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "creating topics failed; retrying");
                    next_topics = now + TOPICS_RETRY;
                }
            }
        }
        if now >= next_retention {
            next_retention = now + RETENTION_EVERY;
            if let Err(e) = enforce_retention(&ctx).await {
                tracing::warn!(error = %e, "retention pass failed");
            }
        }
        wake.borrow_and_update();
        let held = lanes.held();
        let mut rows = if held.is_empty() || !topics_ready {
            Vec::new()
        } else {
            match publish::pending(&ctx.store, &held, cfg.relay_batch).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the outbox failed");
                    Vec::new()
                }
            }
        };
        if rows.is_empty() {
            let nap = poll.min(next_refresh.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(nap) => {}
            }
            continue;
        }
        lanes.stamp(&mut rows);
        let send = publish::send(&ctx, &producer, &rows);
        let outcome = lanes.bounded(&ctx, &producer, &rows, send).await;
        if let Err(e) = lanes.mark_published(&ctx, &rows, &outcome.acked).await {
            // The rows are on the broker; they will be sent again (a duplicate the consumers'
            // inbox absorbs).
            tracing::warn!(error = %e, "marking relayed rows failed");
        }
        if outcome.failed > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(FAILURE_BACKOFF) => {}
            }
        }
    }
    // Flush first (bounded by the lanes' deadline), purge what is left, then hand the lanes
    // over: another relay must not start on them while this one still sends.
    let flush_for = lanes
        .deadline_all()
        .saturating_duration_since(Instant::now());
    let _ = tokio::task::spawn_blocking(move || {
        let _ = producer.flush(flush_for.min(Duration::from_secs(5)));
        producer.purge(PurgeConfig::default().queue().inflight());
    })
    .await;
    lanes.release().await;
    tracing::info!("relay stopped");
    Ok(())
}
